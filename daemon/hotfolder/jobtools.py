"""What every step of a job may use: its result type, and the tools shared by the step handlers.

A step handler reads one job, makes one side effect and returns a :class:`StepResult`; the runner
turns that into a decision and a journal commit. :class:`JobTools` holds what the handlers share:
the settings, the journal, each target's adapter, the clock, a job's memory-only scratch (presigned
URLs never reach the journal) and the link locks that keep two links to one record apart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotfolder.config import Settings
from hotfolder.errors import StepError
from hotfolder.journal import Job, JournalBackend
from hotfolder.layout import LayoutError, validate_segment
from hotfolder.limits import TargetUnavailable
from hotfolder.logsetup import redact_value
from hotfolder.pipeline import Outcome, OutcomeKind
from hotfolder.transfer import FileDigests, FileIdentity
from hotfolder.vendors.base import StepContext, Vendor


@dataclass
class StepResult:
    """What one step did: its outcome and what goes into the journal with the decision."""

    outcome: Outcome
    ids: Mapping[str, Any] = field(default_factory=dict)
    digests: FileDigests | None = None
    outcome_path: str | None = None  # where the file went; "" when it left the inbox by other hands
    bytes: int = 0
    vendor_replace: Mapping[str, Any] | None = None  # every vendor id at once (a resend)
    vendor_removals: tuple[str, ...] = ()


REMOVED_TARGET_RECHECK = 600.0  # seconds; a reload that adds the target back wakes its jobs at once


class JobTools:
    def __init__(self, settings: Settings, journal: JournalBackend, adapters: Mapping[str, Vendor],
                 clock: Callable[[], float]) -> None:
        self.settings = settings
        self.journal = journal
        self.adapters = adapters
        self.clock = clock
        self.scratch: dict[int, dict[str, Any]] = {}  # per job, memory only (presigned URLs)
        self._link_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._link_locks_guard = threading.Lock()

    def adapter(self, job: Job) -> Vendor:
        adapter = self.adapters.get(job.target)
        if adapter is None:
            # The target was removed from the config (a reload) while a job for it was unfinished: the job
            # waits in the journal; the reload that brings the target back wakes it.
            raise TargetUnavailable(job.target, f"target '{job.target}' is not in the configuration (removed by a "
                                    "reload?): the job waits for it to come back", REMOVED_TARGET_RECHECK)
        return adapter

    def source(self, job: Job) -> Path:
        return self.settings.inbox / job.relpath

    def context(self, job: Job) -> StepContext:
        # Checked again here, not only in layout.place: a journal row may not have come from place()
        # (hand-edited, older version), and percent-encoding cannot neutralise "." or "..", which
        # HTTP clients resolve as dot segments ("/reports/.." becomes "/").
        try:
            for segment, what in ((job.record, "record id"), (job.group, "folder"), (job.name, "file name")):
                if segment is not None:
                    validate_segment(segment, what)
        except LayoutError as error:
            raise StepError(OutcomeKind.PERMANENT, error.reason) from None
        digests = FileDigests.from_dict(job.digests) if job.digests else None
        return StepContext(
            job_id=job.id, target=job.target, record=job.record, group=job.group, name=job.name,
            path=self.source(job), identity=digests.identity if digests else FileIdentity(job.size, job.mtime_ns),
            digests=digests,
            ids=job.vendor, scratch=self.scratch.setdefault(job.id, {}),
            remember=lambda ids: self.journal.add_vendor_ids([job.id], redact_value(dict(ids))),
        )

    def link_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._link_locks_guard:
            return self._link_locks.setdefault(key, threading.Lock())


def printable(name: str) -> str:
    """A file name as text that can be written anywhere: bytes that were not UTF-8 become \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")

