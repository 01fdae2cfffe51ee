"""Opening a journal file: its pragmas and schema, the whole-file check when one is due, and a damaged
file moved aside whole (the package's "What is not promised" and "When damage is looked for")."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hotfolder.journal.rows import JOB_COLUMNS_DDL

SCHEMA_VERSION = 1
FULL_CHECK_EVERY = 7 * 86400.0  # seconds: a whole-file check at least this often, even after clean stops

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    {JOB_COLUMNS_DDL.strip()}
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_active_per_path ON jobs(relpath) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs(next_attempt_at) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_by_record ON jobs(target, record, size);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_T = TypeVar("_T")


def connect(path: Path) -> sqlite3.Connection:
    """A connection any thread may use (callers serialise it with their own lock), in autocommit mode:
    transactions are begun and committed explicitly."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def open_journal(path: Path, *, clock: Callable[[], float], check_may_wait: bool) -> tuple[sqlite3.Connection, bool]:
    """The write connection to the journal at ``path``, and whether this open checked the whole file.
    ``check_may_wait``: the check may be skipped when ``whole_check_can_wait`` says so (the daemon's
    own journal, which records clean stops). Raises ``sqlite3.DatabaseError`` if the file is damaged."""
    conn = connect(path)
    checked = False
    try:
        # Pages freed by archiving go back to the disk (``PRAGMA incremental_vacuum`` after a pass).
        # Only for a new, empty file, before journal_mode=WAL first writes it: on an existing file
        # setting it would write the header, which must stay untouched until it has been checked.
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        if pages == 0:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checked by SQLite, never by reading the file ourselves: closing any other file
        # descriptor on the database drops this process's POSIX locks on it, and another
        # process may then checkpoint and delete the WAL under us (SQLite's documented pitfall).
        if not (check_may_wait and whole_check_can_wait(conn, path, clock(), FULL_CHECK_EVERY)):
            (ok,) = conn.execute("PRAGMA quick_check").fetchone()
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
            checked = True
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if checked:
            set_meta(conn, "checked_at", repr(clock()))
    except sqlite3.DatabaseError:
        conn.close()
        raise
    return conn, checked


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


def open_or_move_aside(path: Path, open_file: Callable[[Path], _T]) -> tuple[_T, Path | None]:
    """``open_file(path)``, and None; or, when SQLite finds garbage in the main file (not a torn WAL
    tail, which it discards itself), the damaged file is kept for a person to look at, moved aside
    whole, and a fresh one opened: then also where the damaged file went."""
    try:
        return open_file(path), None
    except sqlite3.DatabaseError:
        aside = move_aside(path)
        return open_file(path), aside


def move_aside(path: Path) -> Path:
    """Rename the file and its WAL and shared-memory index to ``<name>.damaged-<time>``; returns the
    new name of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            os.replace(src, Path(str(aside) + suffix))
    return aside
