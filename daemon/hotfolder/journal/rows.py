"""A job as one SQLite row, shared by the live journal and its archive (``archive.py``).

Both files hold the same columns, so a finished job moves between them as its raw row and reads
back as the same ``Job``. The columns one step's UPDATE sets are written here once for every
backend (``step_assignments``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from hotfolder.journal.model import Job, StepRecord
from hotfolder.pipeline import TERMINAL_STATES, State

# Every column but the id, as SQL. The journal's id is AUTOINCREMENT so that an id is never handed
# out twice, even after its row moved to the archive: the archive keys rows by that same id.
JOB_COLUMNS_DDL = """
    target          TEXT NOT NULL,
    record          TEXT,
    grp             TEXT,
    name            TEXT NOT NULL,
    relpath         TEXT NOT NULL,
    size            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    digests         TEXT,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    vendor          TEXT NOT NULL DEFAULT '{}',
    last_error      TEXT,
    outcome_path    TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    finished_at     REAL
"""

COLUMNS = (
    "id, target, record, grp, name, relpath, size, mtime_ns, digests, state, attempts, "
    "next_attempt_at, vendor, last_error, outcome_path, created_at, updated_at, finished_at"
)


def encode_json(value: Any) -> str | None:
    # ASCII: a file name that is not UTF-8 (a str with lone surrogates) becomes a \udcXX escape, which
    # SQLite stores and json.loads turns back into the same str; raw, SQLite could not take it at all.
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=True)


def decode_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def sql_text(value: str | None) -> str | bytes | None:
    """Names that are not UTF-8 arrive as str with surrogate escapes, which SQLite cannot store as
    text: those are kept as their raw bytes (a BLOB) and turned back into the same str on reading."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(value)
    return value


def _from_sql_text(value: str | bytes | None) -> str | None:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def row_to_job(row: tuple[Any, ...]) -> Job:
    (job_id, target, record, grp, name, relpath, size, mtime_ns, digests, state, attempts,
     next_attempt_at, vendor, last_error, outcome_path, created_at, updated_at, finished_at) = row
    return Job(
        id=job_id, target=_from_sql_text(target) or "", record=_from_sql_text(record),
        group=_from_sql_text(grp), name=_from_sql_text(name) or "", relpath=_from_sql_text(relpath) or "",
        size=size, mtime_ns=mtime_ns, digests=decode_json(digests), state=State(state), attempts=attempts,
        next_attempt_at=next_attempt_at, vendor=decode_json(vendor) or {}, last_error=decode_json(last_error),
        outcome_path=_from_sql_text(outcome_path), created_at=created_at, updated_at=updated_at,
        finished_at=finished_at,
    )


def step_assignments(step: StepRecord, now: float, mark: str,
                     text: Callable[[str], object]) -> tuple[list[str], list[Any]]:
    """The SET clauses of one step's UPDATE and their arguments, for every backend: only the columns
    the step changes (fields left at None keep their stored values), and never the vendor ids, which
    each backend merges its own way. ``mark`` is the driver's placeholder (``?``, ``%s``); ``text``
    turns a path into what the store keeps for it."""
    assignments = [f"state = {mark}", f"attempts = {mark}", f"next_attempt_at = {mark}", f"updated_at = {mark}"]
    args: list[Any] = [step.state.value, step.attempts, step.next_attempt_at, now]
    for column, value in (("digests", encode_json(step.digests)), ("size", step.size), ("mtime_ns", step.mtime_ns),
                          ("last_error", encode_json(step.last_error))):
        if value is not None:
            assignments.append(f"{column} = {mark}")
            args.append(value)
    if step.clear_error and step.last_error is None:
        assignments.append("last_error = NULL")
    if step.clear_outcome_path:
        assignments.append("outcome_path = NULL")
    elif step.outcome_path is not None:
        assignments.append(f"outcome_path = {mark}")
        args.append(text(step.outcome_path))
    if step.state in TERMINAL_STATES:
        assignments.append(f"finished_at = {mark}")  # finished jobs are never recorded again
        args.append(now)
    return assignments, args
