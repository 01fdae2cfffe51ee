"""Reading jobs: the read connection, and each question the daemon asks of a journal file (the twin
lookup also of its archive)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from hotfolder.journal.model import Job
from hotfolder.journal.opening import connect
from hotfolder.journal.rows import COLUMNS, row_to_job, sql_text
from hotfolder.pipeline import State

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Reader:
    """Thread-safe. A read-only connection of its own, one query at a time: in WAL mode it sees every
    committed write and never waits for a commit's fsync, so a reader never queues behind a writer."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = connect(path)
        self._conn.execute("PRAGMA query_only=1")

    def run(self, query: Callable[Concatenate[sqlite3.Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self._lock:
            return query(self._conn, *args, **kwargs)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def get(conn: sqlite3.Connection, job_id: int) -> Job:
    row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    return row_to_job(row)


def active_job_for(conn: sqlite3.Connection, relpath: str) -> Job | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE relpath = ? AND finished_at IS NULL", (sql_text(relpath),)
    ).fetchone()
    return None if row is None else row_to_job(row)


def ready_ids(conn: sqlite3.Connection, now: float, limit: int, exclude: set[int] | frozenset[int]) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM jobs WHERE finished_at IS NULL AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at, id LIMIT ?",
        (now, limit + len(exclude)),
    ).fetchall()
    return [job_id for (job_id,) in rows if job_id not in exclude][:limit]


def next_wakeup(conn: sqlite3.Connection, exclude: set[int] | frozenset[int]) -> float | None:
    rows = conn.execute(
        "SELECT id, next_attempt_at FROM jobs WHERE finished_at IS NULL "
        "ORDER BY next_attempt_at LIMIT ?",
        (len(exclude) + 1,),
    ).fetchall()
    for job_id, when in rows:
        if job_id not in exclude:
            return float(when)
    return None


def unfinished_count(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE finished_at IS NULL").fetchone()
    return int(count)


def oldest_unfinished(conn: sqlite3.Connection) -> float | None:
    # The partial index jobs_ready holds exactly the unfinished rows: this reads those, not the table.
    (oldest,) = conn.execute("SELECT MIN(created_at) FROM jobs WHERE finished_at IS NULL").fetchone()
    return None if oldest is None else float(oldest)


def counts_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
    return {state: count for state, count in rows}


def jobs(conn: sqlite3.Connection, states: tuple[State, ...] | None, unfinished: bool, limit: int) -> list[Job]:
    conditions: list[str] = []
    args: list[Any] = []
    if states:
        conditions.append(f"state IN ({', '.join('?' for _ in states)})")
        args.extend(state.value for state in states)
    if unfinished:
        conditions.append("finished_at IS NULL")
    query = f"SELECT {COLUMNS} FROM jobs"
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    query += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [row_to_job(row) for row in conn.execute(query, args).fetchall()]


def failed_since(conn: sqlite3.Connection, since: float) -> int:
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM jobs WHERE state = ? AND finished_at >= ?", (State.FAILED.value, since)
    ).fetchone()
    return int(count)


def group_jobs(conn: sqlite3.Connection, target: str, record: str | None, group: str) -> list[Job]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE target = ? AND record IS ? AND grp = ? "
        "AND (finished_at IS NULL OR state = ?) ORDER BY id",
        (sql_text(target), sql_text(record), sql_text(group), State.FAILED.value),
    ).fetchall()
    return [row_to_job(row) for row in rows]


def possible_twins(
    conn: sqlite3.Connection, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
) -> list[Job]:
    """Other jobs for one record, not failed or gone, that may hold the same bytes as job ``exclude``:
    same ``size``, and either older and not hashed yet or with an equal SHA-256 or MD5. The journal and
    its archive both index ``(target, record, size)``, so this is a lookup, not a scan of the record."""
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE target = ? AND record IS ? AND size = ? AND id != ? "
        "AND state NOT IN (?, ?, ?) AND ((digests IS NULL AND id < ?) "
        "OR json_extract(digests, '$.sha256') = ? OR json_extract(digests, '$.md5') = ?) ORDER BY id",
        (sql_text(target), sql_text(record), size, exclude, State.FAILED.value, State.TO_FAILED.value,
         State.GONE.value, exclude, digests.get("sha256"), digests.get("md5")),
    ).fetchall()
    return [row_to_job(row) for row in rows]


def finished_before(conn: sqlite3.Connection, cutoff: float, limit: int) -> list[tuple[Any, ...]]:
    """Up to ``limit`` raw rows (``COLUMNS`` order) of jobs finished before ``cutoff``, oldest id first."""
    return conn.execute(
        f"SELECT {COLUMNS} FROM jobs WHERE finished_at < ? ORDER BY id LIMIT ?", (cutoff, limit)
    ).fetchall()


def highest_id(conn: sqlite3.Connection) -> int:
    (highest,) = conn.execute("SELECT MAX(id) FROM jobs").fetchone()
    return int(highest or 0)


def count(conn: sqlite3.Connection) -> int:
    (number,) = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
    return int(number)
