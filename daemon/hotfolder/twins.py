"""Twins: the same bytes dropped twice for one record are attached once. A pure decision.

Asked before presign, when this job's digests are durable and so are those of every twin that got
that far, so two copies dropped together cannot both miss each other: the older job goes on, the
younger waits for it. If the twin ends in done/, this file follows it there as a duplicate; if the
twin fails, this one is sent. The journal (and its archive) supply the candidates: other jobs for
the same record and size that are not failed or gone; this module only decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hotfolder.journal import Job
from hotfolder.pipeline import State


@dataclass(frozen=True)
class WaitForTwin:
    """An older job may hold the same bytes and has not settled it yet: ask again later."""

    reason: str
    after: float  # seconds


@dataclass(frozen=True)
class Duplicate:
    """The same bytes are attached (or about to be) by job ``of``: do not send them again."""

    of: int
    of_file: str  # where the twin went (or still is), for the note beside this file


def same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal size and an equal digest of every kind both have (vendors hash with different algorithms)."""
    if a.get("size") != b.get("size"):
        return False
    shared = [name for name in ("sha256", "md5") if a.get(name) and b.get(name)]
    return bool(shared) and all(a[name] == b[name] for name in shared)


def find_twin(job: Job, candidates: Sequence[Job]) -> WaitForTwin | Duplicate | None:
    """What ``job`` (hashed) should do about ``candidates``; None: nothing stands in its way."""
    mine = job.digests or {}
    for other in candidates:
        if other.digests is None:
            if other.id < job.id and other.size == job.size:
                # An older file of the same size is not hashed yet: it may be our twin and it goes
                # first, so wait until its digests are known.
                return WaitForTwin(f"waiting for job {other.id} ({other.name}, same size) to be hashed", 0.5)
            continue
        if not same_content(mine, other.digests):
            continue
        if other.state in (State.DONE, State.TO_DONE):
            return Duplicate(other.id, other.outcome_path or other.relpath)
        if other.id < job.id:
            return WaitForTwin(f"waiting for job {other.id} with the same bytes ({other.name})", 1.0)
    return None
