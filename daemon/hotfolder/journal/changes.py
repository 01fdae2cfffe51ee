"""Writing jobs: each change to the journal as a function of the write connection, built here and run
by the group commit (``commit.py``), which makes it durable before its caller goes on."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hotfolder.journal.model import Job, NewJob, StepRecord
from hotfolder.journal.rows import COLUMNS, decode_json, encode_json, row_to_job, sql_text, step_assignments

Change = Callable[[sqlite3.Connection], Any]

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def insert_jobs(new_jobs: Sequence[NewJob], now: float) -> Callable[[sqlite3.Connection], list[Job]]:
    """Insert ``new_jobs``, skipping a path with an unfinished job (the partial unique index); the jobs
    inserted."""
    def insert(conn: sqlite3.Connection) -> list[Job]:
        added: list[Job] = []
        for new in new_jobs:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO jobs (target, record, grp, name, relpath, size, mtime_ns, state, "
                "last_error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sql_text(new.target), sql_text(new.record), sql_text(new.group), sql_text(new.name),
                 sql_text(new.relpath), new.size, new.mtime_ns, new.state.value, encode_json(new.last_error),
                 now, now),
            )
            if cursor.rowcount:
                added.append(Job(
                    id=int(cursor.lastrowid or 0), target=new.target, record=new.record, group=new.group,
                    name=new.name, relpath=new.relpath, size=new.size, mtime_ns=new.mtime_ns, digests=None,
                    state=new.state, attempts=0, next_attempt_at=0.0, vendor={},
                    last_error=dict(new.last_error) if new.last_error is not None else None,
                    outcome_path=None, created_at=now, updated_at=now, finished_at=None,
                ))
        return added

    return insert


def record_step(job_id: int, step: StepRecord, now: float) -> Callable[[sqlite3.Connection], Job]:
    """One ``UPDATE … RETURNING`` statement: vendor ids are merged into the stored ones by SQLite's
    ``json_set``/``json_remove`` (ids written meanwhile by ``merge_vendor_ids`` are kept), and the
    other fields left at None keep their stored values. KeyError if the job does not exist; ValueError,
    before anything runs, for a vendor id key that cannot be stored."""
    # Only the columns this step changes are SET: SQLite rewrites an index only when the UPDATE
    # names one of its columns, so a plain step touches the row and two indexes (state, retry
    # time) rather than all five, which is fewer pages into the WAL per commit.
    assignments, args = step_assignments(step, now, "?", sql_text)
    if step.vendor_update or step.extra_vendor_removals or step.vendor_replace is not None:
        vendor_sql, vendor_args = _vendor_merge(step)
        assignments.append(f"vendor = {vendor_sql}")
        args.extend(vendor_args)
    statement = f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ? RETURNING {COLUMNS}"
    args.append(job_id)

    def update(conn: sqlite3.Connection) -> Job:
        # fetchall() runs the statement to its end: in autocommit mode that is the commit.
        rows = conn.execute(statement, args).fetchall()
        if not rows:
            raise KeyError(job_id)
        return row_to_job(rows[0])

    return update


def _vendor_merge(step: StepRecord) -> tuple[str, list[Any]]:
    """SQL for the job's vendor ids after ``step`` (removals, then updates), and its arguments.

    Keys are written into JSON paths (see ``_plain_key``); each value goes in through ``json(?)`` so
    that objects, lists and null are stored as given."""
    sql, args = "vendor", []
    if step.vendor_replace is not None:
        sql = "json(?)"
        args.append(encode_json(step.vendor_replace))
    if step.extra_vendor_removals:
        sql = f"json_remove({sql}{', ?' * len(step.extra_vendor_removals)})"
        args.extend(f"$.{_plain_key(key)}" for key in step.extra_vendor_removals)
    if step.vendor_update:
        sql = f"json_set({sql}{', ?, json(?)' * len(step.vendor_update)})"
        for key, value in step.vendor_update.items():
            args.extend((f"$.{_plain_key(key)}", encode_json(value)))
    return sql, args


def _plain_key(key: str) -> str:
    """``key`` as a JSON path label: bare if an identifier, else double-quoted (SQLite has no escape
    for a quote inside a label, so such a key is refused: adapters name their ids in code)."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    if '"' in key or "\\" in key or not key.isprintable():
        raise ValueError(f"vendor id key {key!r} cannot be stored")
    return f'"{key}"'


def merge_vendor_ids(job_ids: list[int], ids: Mapping[str, Any], now: float) -> Change:
    """Merge ``ids`` into each job's vendor ids, ``ids`` winning (group links)."""
    def merge(conn: sqlite3.Connection) -> None:
        for job_id in job_ids:
            (current,) = conn.execute("SELECT vendor FROM jobs WHERE id = ?", (job_id,)).fetchone()
            merged = {**(decode_json(current) or {}), **ids}
            conn.execute("UPDATE jobs SET vendor = ?, updated_at = ? WHERE id = ?",
                         (encode_json(merged), now, job_id))

    return merge


def delete_jobs(ids: list[int]) -> Change:
    def delete(conn: sqlite3.Connection) -> None:
        conn.execute(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(ids))})", ids)

    return delete


def ids_after(highest: int) -> Change:
    """New job ids start above ``highest``: a journal started afresh (moved aside as damaged, or
    deleted by hand) must not hand out ids the archive already holds, which key its rows."""
    def raise_sequence(conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        if row is None:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (highest,))
        elif row[0] < highest:
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'jobs'", (highest,))

    return raise_sequence
