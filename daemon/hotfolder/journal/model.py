"""The values that cross the journal's interface, whatever stores them: a job as read back, a file
about to become one, and what one step changes on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hotfolder.pipeline import State


@dataclass(frozen=True)
class Job:
    id: int
    target: str
    record: str | None
    group: str | None
    name: str
    relpath: str  # POSIX path relative to the inbox
    size: int
    mtime_ns: int
    digests: Mapping[str, Any] | None
    state: State
    attempts: int
    next_attempt_at: float
    vendor: Mapping[str, Any]  # ids each step returned (never secrets)
    last_error: Mapping[str, Any] | None
    outcome_path: str | None
    created_at: float
    updated_at: float
    finished_at: float | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True)
class NewJob:
    """A file about to enter the journal."""

    target: str
    record: str | None
    group: str | None
    name: str
    relpath: str
    size: int
    mtime_ns: int
    state: State = State.HASH
    last_error: Mapping[str, Any] | None = None
    # When the watcher last found the file there. A journal shared by several daemons skips the file if a
    # job for its path finished since: another daemon moved it out meanwhile (one daemon alone is told
    # by its own runner when a file leaves, and needs no such check).
    seen_at: float | None = None


@dataclass
class StepRecord:
    """What one step changes on a job; fields left at None are kept as they are."""

    state: State
    attempts: int
    next_attempt_at: float = 0.0
    vendor_update: Mapping[str, Any] | None = None
    digests: Mapping[str, Any] | None = None
    size: int | None = None
    mtime_ns: int | None = None
    last_error: Mapping[str, Any] | None = None
    clear_error: bool = False
    outcome_path: str | None = None
    clear_outcome_path: bool = False  # the planned destination was not used (the file was taken away)
    extra_vendor_removals: tuple[str, ...] = field(default_factory=tuple)
    # Every vendor id at once (a resend sets the last send's ids aside); applied before the above.
    vendor_replace: Mapping[str, Any] | None = None



class LeaseLost(Exception):
    """This node no longer holds the job: its lease expired (the node was frozen, cut off from the
    database, or too slow to renew) and another node may have claimed it. Nothing was written; the
    worker drops the job without any further side effect, and whoever holds it now goes on."""

    def __init__(self, job_id: int, why: str) -> None:
        super().__init__(f"job {job_id}: {why}")
        self.job_id = job_id


@dataclass(frozen=True)
class NodeInfo:
    """One daemon sharing the journal (``hotfolder status``)."""

    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    jobs_held: int
