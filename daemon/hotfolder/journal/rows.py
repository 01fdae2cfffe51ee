"""A job as one SQLite row, shared by the live journal and its archive (``daemon/hotfolder/archive.py``).

Both files hold the same columns, so a finished job moves between them as its raw row and reads
back as the same ``Job``. Also here: the twin lookup both files answer, and the rule for when a
file deserves a whole-file check at open.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.pipeline import State

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


def possible_twin_rows(
    conn: sqlite3.Connection, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """Rows of other jobs for one record, not failed or gone, that may hold the same bytes as job
    ``exclude``: same ``size``, and either older and not hashed yet or with an equal SHA-256 or MD5.
    Both files index ``(target, record, size)``, so this is a lookup, not a scan of the record."""
    return conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE target = ? AND record IS ? AND size = ? AND id != ? "
        "AND state NOT IN (?, ?, ?) AND ((digests IS NULL AND id < ?) "
        "OR json_extract(digests, '$.sha256') = ? OR json_extract(digests, '$.md5') = ?) ORDER BY id",
        (sql_text(target), sql_text(record), size, exclude, State.FAILED.value, State.TO_FAILED.value,
         State.GONE.value, exclude, digests.get("sha256"), digests.get("md5")),
    ).fetchall()


def whole_check_can_wait(conn: sqlite3.Connection, path: Path, now: float, check_every: float) -> bool:
    """True when ``PRAGMA quick_check`` of the file at ``path`` may be skipped at this open: its writer
    recorded a clean stop (``clean_stop`` = 1 in its ``meta`` table), no write-ahead log was left behind
    (SQLite empties it when the last writer closes), the file is exactly the size its header gives
    (not cut or grown meanwhile), and its last whole-file check is less than ``check_every`` old."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return False
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (page_count,) = conn.execute("PRAGMA page_count").fetchone()
    if page_size * page_count != path.stat().st_size:
        return False
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
        return False
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    try:
        checked_at = float(meta.get("checked_at", "0"))
    except ValueError:
        return False
    return meta.get("clean_stop") == "1" and now - checked_at < check_every
