"""Finished jobs kept out of the live journal: a second SQLite file beside it.

Why: after an unclean stop the journal is checked whole (``PRAGMA quick_check`` reads every page, see
the package docstring), which from a cold disk takes seconds once it holds a million finished jobs.
A job finished long ago is needed for one thing only: recognising a file dropped again as a twin of
one already attached (``Journal.possible_twins``), besides the history an admin may look up. So jobs
finished more than ``archive_after`` ago move into ``<journal>.archive<suffix>``, which is written only
by an archival pass and otherwise only read; the live journal stays proportional to recent work.

Crash rules of a move (two SQLite files in WAL mode cannot share one atomic transaction):

1. a batch of rows is copied into the archive and committed there, fsynced, first;
2. then the same rows are deleted from the journal in one journal transaction.

A crash between the two leaves rows in both files; the next pass copies them again (same ids, so
``INSERT OR REPLACE`` changes nothing) and deletes them. A reader looks in the journal *first* and in
the archive second, merging by id: a row under way is in the archive before it leaves the journal,
so read in that order it is never missed (the other order could miss a row moved between the two).

When the archive is checked whole: not at open, so a restart never waits for it. The pass writes
``clean_stop`` 0 before and 1 after its writes, and then empties the write-ahead log, so a crash
outside a pass leaves nothing to check. The archiving thread checks the file in the background when
the last pass did not end, the file's size disagrees with its header, or the last check is more
than ``FULL_CHECK_EVERY`` old. A damaged archive is moved aside whole, with an error in the log, and
a fresh one started; what is lost is the recognition of twins of files finished before the damage.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hotfolder.journal import queries
from hotfolder.journal.model import Job
from hotfolder.journal.opening import connect, set_meta, whole_check_can_wait
from hotfolder.journal.queries import Reader
from hotfolder.journal.rows import COLUMNS, JOB_COLUMNS_DDL

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id              INTEGER PRIMARY KEY,
    {JOB_COLUMNS_DDL.strip()}
);
CREATE INDEX IF NOT EXISTS jobs_by_record ON jobs(target, record, size);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def archive_path(journal: Path) -> Path:
    """``/var/lib/hotfolder/journal.db`` → ``/var/lib/hotfolder/journal.archive.db``."""
    return journal.with_name(f"{journal.stem}.archive{journal.suffix}")


class Archive:
    """Thread-safe. One connection writes (the archival pass, one at a time); a second one reads for
    the twin lookups, which in WAL mode never wait for a pass."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, check_every: float) -> None:
        self.path = path
        self._clock = clock
        self._check_every = check_every
        self._write_lock = threading.Lock()
        self._writer = connect(path)
        try:
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=FULL")
            # Decided before this open writes anything (the schema below would make the file look fine).
            self.check_due = not whole_check_can_wait(self._writer, path, self._clock(), check_every)
            self._writer.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            self._writer.close()
            raise
        self._reader = Reader(path)

    def close(self) -> None:
        self._reader.close()
        with self._write_lock:
            self._writer.close()

    # -- reading -----------------------------------------------------------------------------------

    def possible_twins(
        self, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
    ) -> list[Job]:
        return self._reader.run(queries.possible_twins, target, record, exclude, size, digests)

    def highest_id(self) -> int:
        return self._reader.run(queries.highest_id)

    def count(self) -> int:
        return self._reader.run(queries.count)

    # -- writing (the archival pass) -----------------------------------------------------------------

    def begin_pass(self) -> None:
        self._set_meta("clean_stop", "0")

    def store(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Commit ``rows`` (raw journal rows, ``COLUMNS`` order) durably; rows already here are replaced
        by the same content, which is what a pass repeated after a crash does."""
        placeholders = ", ".join("?" for _ in COLUMNS.split(","))
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(f"INSERT OR REPLACE INTO jobs ({COLUMNS}) VALUES ({placeholders})", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def end_pass(self) -> None:
        """Mark the pass finished, then fold the write-ahead log into the file and empty it, so that a
        crash from now until the next pass finds nothing to check."""
        self._set_meta("clean_stop", "1")
        self._empty_wal()

    def _empty_wal(self) -> None:
        with self._write_lock:
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _set_meta(self, key: str, value: str) -> None:
        with self._write_lock:
            set_meta(self._writer, key, value)

    # -- the whole-file check ------------------------------------------------------------------------

    def check(self) -> str:
        """Run ``PRAGMA quick_check`` over the whole file (seconds for a million rows from a cold disk;
        the archiving thread calls this, never a restart). Returns "ok" or SQLite's first complaint."""
        checker = connect(self.path)
        try:
            (result,) = checker.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as error:
            result = str(error)
        finally:
            checker.close()
        if result == "ok":
            self._set_meta("checked_at", repr(self._clock()))
            self._empty_wal()  # as after a pass: a crash from here on leaves nothing to check
            self.check_due = False
        return str(result)
