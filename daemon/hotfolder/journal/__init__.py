"""The durable job store: one SQLite file, one row per file that entered the pipeline.

Crash rules
-----------
Why SQLite: it gives atomic, durable transactions on one file with a recovery procedure
that has been tested against power loss for two decades; a hand-written append log would
have to re-earn all of that (torn records, checksums, compaction). We open it in WAL mode
with ``synchronous=FULL``: every committed transaction is fsynced in the write-ahead log
before ``commit()`` returns, so a committed row survives a power cut. A transaction that
was not committed (torn WAL tail, half-written frame) is discarded by SQLite at the next
open, which leaves the job at its previous step: exactly what the runner expects.

What is promised, step by step:

1. A job row is committed before the daemon does anything with its file.
2. Each step's result (the vendor ids it returned, the next state, attempts, the retry
   time) is committed *before* the next step's side effect starts. After ``kill -9`` the
   job resumes at the first step whose result was not committed.
3. Therefore a step may run twice: once before the crash (its effect happened but its
   result was lost) and once after. Each step is written to be safe to repeat:
   hash and presign have no lasting effect at the vendor (a re-presign leaves at most an
   unfinished, unlinked upload behind); upload to a fresh presigned URL writes a new
   object; finalize is checked against the vendor's attachment state; link first reads
   the record and does nothing if our attachment is already there.
4. Secrets never enter the journal: presigned URLs and their headers live in memory only.
   A job that restarts at ``upload`` finds no URL and goes back to ``presign``.
5. A file leaves the inbox only after the journal says where it goes: the destination is
   committed first (``outcome_path``; for done/ in the same commit as the link's result), then
   the file is moved, then the job is closed. A crash in between is finished by
   ``outcomes.finish_interrupted_move``.
6. Only one unfinished job may exist per inbox path (a partial unique index), so a file
   seen twice (event + rescan, or before and after a restart) never becomes two jobs.
7. A finished job is never changed again. Once it is older than ``archive_after`` it moves
   to the archive beside the journal (copied and committed there first, then deleted here;
   ``daemon/hotfolder/archive.py``), where the twin lookup still finds it. Ids are AUTOINCREMENT, so an
   archived job's id is never given to a new one.

What is not promised: a damaged database file (not a torn WAL tail, but a main file cut
mid-page or overwritten) is moved aside whole and a fresh journal started, with a loud log line;
SQLite cannot salvage rows from it. Files still in the inbox then start again from ``hash``, and
the link checks above compare ids the fresh journal no longer has. Fulcrum record attachments are
still recognised (an item of the same name whose bytes, fetched back, hash the same), so they are
not attached twice; for the other vendors a file whose link landed just before the damage may be
linked a second time. A WAL file from another database placed beside the journal cannot be told
apart by SQLite and is applied.

When damage is looked for: ``PRAGMA quick_check`` reads every page, which took 10 s from a cold disk
when a journal held a million finished jobs (the archive now keeps it to recent work, and checks
itself in the background), so the daemon runs it at start only when the
last run did not close the journal (a crash or power cut leaves a WAL and no clean-stop mark), when
the file's size disagrees with its header (cut or grown meanwhile), and at least every
``FULL_CHECK_EVERY``. Damage done to a cleanly closed file without changing its size is found by
that weekly check, or by SQLite when the damaged page is read.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hotfolder.journal.archive import Archive, archive_path
from hotfolder.journal.rows import (
    COLUMNS,
    JOB_COLUMNS_DDL,
    Job,
    decode_json,
    encode_json,
    possible_twin_rows,
    row_to_job,
    sql_text,
    whole_check_can_wait,
)
from hotfolder.pipeline import State

SCHEMA_VERSION = 1
FULL_CHECK_EVERY = 7 * 86400.0  # seconds: a whole-file check at least this often, even after clean stops

_SCHEMA = f"""
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


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def _delete_rows(ids: list[int]) -> Callable[[sqlite3.Connection], None]:
    def delete(conn: sqlite3.Connection) -> None:
        conn.execute(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(ids))})", ids)

    return delete


_T = TypeVar("_T")


@dataclass(eq=False)
class _Change:
    """One caller's part of a group commit."""

    apply: Callable[[sqlite3.Connection], Any]
    single_statement: bool = False
    result: Any = None
    error: BaseException | None = None
    done: bool = False  # set by the committing thread, read by the caller after taking the write lock


class Journal:
    """Thread-safe. Writes go through one connection and are group-committed (see ``_write``);
    reads use a second connection under their own lock, so a worker looking for work never
    queues behind another worker's fsync. In WAL mode a read sees every committed write."""

    def __init__(self, path: Path, *, clock: Any = time.time, daemon: bool = False) -> None:
        """``daemon``: this is the daemon's own journal, which records whether it stopped cleanly (the
        ``status`` command and tests open journals without touching that record)."""
        self.path = path
        self._clock = clock
        self._daemon = daemon
        self.fully_checked = False  # whether this open ran PRAGMA quick_check over the whole file
        self._lock = threading.Lock()  # held by the thread committing a batch of changes
        self._pending_lock = threading.Lock()
        self._pending: list[_Change] = []  # changes waiting for the next group commit
        self._read_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered_from: Path | None = None
        try:
            self._conn = self._open(path)
        except sqlite3.DatabaseError:
            # Garbage in the main file (not a torn WAL tail, which SQLite itself discards): keep
            # the damaged file for a person to look at and start afresh; see the essay above.
            self.recovered_from = self._move_aside(path)
            self._conn = self._open(path)
        if daemon:
            self._set_meta("clean_stop", "0")  # until close() says otherwise
        self._reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._reader.execute("PRAGMA query_only=1")
        # Finished jobs older than the daemon's ``archive_after`` (daemon/hotfolder/archive.py); opened when the
        # file exists, created by the first archival pass that has something to move.
        self.archive_recovered_from: Path | None = None
        self._archive_lock = threading.Lock()  # one pass or check at a time; held while _archive changes
        self._archive: Archive | None = self._open_archive() if archive_path(path).exists() else None
        if self._archive is not None:
            self._ids_after(self._archive.highest_id())

    def _ids_after(self, highest: int) -> None:
        """New job ids start above ``highest``: a journal started afresh (moved aside as damaged, or
        deleted by hand) must not hand out ids the archive already holds, which key its rows."""
        def raise_sequence(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
            if row is None:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (highest,))
            elif row[0] < highest:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'jobs'", (highest,))

        if highest:
            self._write(raise_sequence)

    def _open_archive(self) -> Archive:
        path = archive_path(self.path)
        try:
            return Archive(path, clock=self._clock, check_every=FULL_CHECK_EVERY)
        except sqlite3.DatabaseError:
            self.archive_recovered_from = self._move_aside(path)
            return Archive(path, clock=self._clock, check_every=FULL_CHECK_EVERY)

    def _open(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
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
            if not (self._daemon and whole_check_can_wait(conn, path, self._clock(), FULL_CHECK_EVERY)):
                (ok,) = conn.execute("PRAGMA quick_check").fetchone()
                if ok != "ok":
                    raise sqlite3.DatabaseError(f"quick_check: {ok}")
                self.fully_checked = True
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if self.fully_checked:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('checked_at', ?)",
                             (repr(self._clock()),))
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _set_meta(self, key: str, value: str) -> None:
        def store(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

        self._write(store, single_statement=True)

    @staticmethod
    def _move_aside(path: Path) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        return aside

    def close(self) -> None:
        if self._daemon:
            self._set_meta("clean_stop", "1")  # the next start may skip the whole-file check
        with self._archive_lock:
            if self._archive is not None:
                self._archive.close()
        with self._lock, self._read_lock:
            self._reader.close()
            self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            yield self._reader

    def _write(self, apply: Callable[[sqlite3.Connection], _T], *, single_statement: bool = False) -> _T:
        """Run ``apply`` in a durable transaction and return its result once it is committed.

        Group commit: while one thread commits (and waits for the fsync), others queue their changes;
        the next thread to take the write lock commits every queued change in one transaction and one
        fsync, and each caller returns only after the commit holding its change has returned, so
        every crash rule above holds unchanged. Each change runs inside its own savepoint: one that
        raises is undone alone and its caller gets the exception; a failed COMMIT fails them all.
        A ``single_statement`` change that finds itself alone runs without BEGIN/COMMIT: SQLite makes
        one statement its own transaction, durable when the statement has run to its end.
        """
        change = _Change(apply, single_statement)
        with self._pending_lock:
            self._pending.append(change)
        with self._lock:
            if not change.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit_batch(batch)
        if change.error is not None:
            raise change.error
        return change.result  # type: ignore[return-value]

    def _commit_batch(self, batch: list[_Change]) -> None:
        conn = self._conn
        if len(batch) == 1 and batch[0].single_statement:
            change = batch[0]
            try:
                change.result = change.apply(conn)
            except BaseException as error:
                change.error = error
            finally:
                change.done = True
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if len(batch) == 1:
                    # Alone (the common case when idle): no savepoint needed, a failure rolls back all.
                    batch[0].result = batch[0].apply(conn)
                else:
                    for change in batch:
                        conn.execute("SAVEPOINT change")
                        try:
                            change.result = change.apply(conn)
                        except Exception as error:
                            conn.execute("ROLLBACK TO change")
                            change.error = error
                        conn.execute("RELEASE change")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException as error:
            for change in batch:
                if change.error is None:
                    change.error = error
                    change.result = None
        finally:
            for change in batch:
                change.done = True

    # -- creating and reading jobs -------------------------------------------------------------

    def add_job(
        self, *, target: str, record: str | None, group: str | None, name: str, relpath: str,
        size: int, mtime_ns: int, state: State = State.HASH, last_error: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """A new job (at ``hash``, or ``to_failed`` for a refused file); None if an unfinished job for
        this path already exists."""
        added = self.add_jobs([NewJob(target, record, group, name, relpath, size, mtime_ns, state, last_error)])
        return added[0] if added else None

    def add_jobs(self, new_jobs: Sequence[NewJob]) -> list[Job]:
        """Journal many files in one transaction (one fsync): a rescan of 100,000 files at start
        would otherwise spend minutes in fsync. Paths with an unfinished job are skipped."""
        now = self._clock()

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

        return self._write(insert)

    def get(self, job_id: int) -> Job:
        with self._read() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return row_to_job(row)

    def active_job_for(self, relpath: str) -> Job | None:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE relpath = ? AND finished_at IS NULL", (sql_text(relpath),)
            ).fetchone()
        return None if row is None else row_to_job(row)

    def ready_ids(self, now: float, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Ids of unfinished jobs whose retry time has come, oldest retry time first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE finished_at IS NULL AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, id LIMIT ?",
                (now, limit + len(exclude)),
            ).fetchall()
        return [job_id for (job_id,) in rows if job_id not in exclude][:limit]

    def next_wakeup(self, exclude: set[int] | frozenset[int] = frozenset()) -> float | None:
        """The earliest retry time among unfinished jobs not in ``exclude``."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, next_attempt_at FROM jobs WHERE finished_at IS NULL "
                "ORDER BY next_attempt_at LIMIT ?",
                (len(exclude) + 1,),
            ).fetchall()
        for job_id, when in rows:
            if job_id not in exclude:
                return float(when)
        return None

    def unfinished_count(self) -> int:
        with self._read() as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE finished_at IS NULL").fetchone()
        return int(count)

    def counts_by_state(self) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def jobs(
        self, *, states: tuple[State, ...] | None = None, unfinished: bool = False, limit: int = 1000
    ) -> list[Job]:
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
        with self._read() as conn:
            rows = conn.execute(query, args).fetchall()
        return [row_to_job(row) for row in rows]

    # -- recording steps -----------------------------------------------------------------------

    def record(self, job_id: int, step: StepRecord) -> Job:
        """Commit one step's result durably; returns the job as it now stands.

        One ``UPDATE … RETURNING`` statement: vendor ids are merged into the stored ones by SQLite's
        ``json_set``/``json_remove`` (ids written meanwhile by ``add_vendor_ids`` are kept), and the
        other fields left at None keep their stored values. Alone, it is its own transaction."""
        now = self._clock()
        # Only the columns this step changes are SET: SQLite rewrites an index only when the UPDATE
        # names one of its columns, so a plain step touches the row and two indexes (state, retry
        # time) rather than all five, which is fewer pages into the WAL per commit.
        assignments = ["state = ?", "attempts = ?", "next_attempt_at = ?", "updated_at = ?"]
        args: list[Any] = [step.state.value, step.attempts, step.next_attempt_at, now]
        if step.vendor_update or step.extra_vendor_removals or step.vendor_replace is not None:
            vendor_sql, vendor_args = _vendor_merge(step)
            assignments.append(f"vendor = {vendor_sql}")
            args.extend(vendor_args)
        for column, value in (("digests", encode_json(step.digests)), ("size", step.size), ("mtime_ns", step.mtime_ns),
                              ("last_error", encode_json(step.last_error))):
            if value is not None:
                assignments.append(f"{column} = ?")
                args.append(value)
        if step.clear_error and step.last_error is None:
            assignments.append("last_error = NULL")
        if step.clear_outcome_path:
            assignments.append("outcome_path = NULL")
        elif step.outcome_path is not None:
            assignments.append("outcome_path = ?")
            args.append(sql_text(step.outcome_path))
        if step.state in (State.DONE, State.FAILED, State.GONE):
            assignments.append("finished_at = ?")  # finished jobs are never recorded again
            args.append(now)
        statement = f"UPDATE jobs SET {', '.join(assignments)} WHERE id = ? RETURNING {COLUMNS}"
        args.append(job_id)

        def update(conn: sqlite3.Connection) -> Job:
            # fetchall() runs the statement to its end: in autocommit mode that is the commit.
            rows = conn.execute(statement, args).fetchall()
            if not rows:
                raise KeyError(job_id)
            return row_to_job(rows[0])

        return self._write(update, single_statement=True)

    def failed_since(self, since: float) -> int:
        """How many jobs ended in failed/ at or after ``since`` (for `hotfolder once`)."""
        with self._read() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ? AND finished_at >= ?", (State.FAILED.value, since)
            ).fetchone()
        return int(count)

    def group_jobs(self, target: str, record: str | None, group: str) -> list[Job]:
        """The jobs of one group folder that are unfinished or ended in failure, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE target = ? AND record IS ? AND grp = ? "
                "AND (finished_at IS NULL OR state = ?) ORDER BY id",
                (sql_text(target), sql_text(record), sql_text(group), State.FAILED.value),
            ).fetchall()
        return [row_to_job(row) for row in rows]

    def add_vendor_ids(self, job_ids: list[int], ids: Mapping[str, Any]) -> None:
        """Merge ``ids`` into several jobs' vendor ids in one durable transaction (group links)."""
        now = self._clock()

        def merge(conn: sqlite3.Connection) -> None:
            for job_id in job_ids:
                (current,) = conn.execute("SELECT vendor FROM jobs WHERE id = ?", (job_id,)).fetchone()
                merged = {**(decode_json(current) or {}), **ids}
                conn.execute("UPDATE jobs SET vendor = ?, updated_at = ? WHERE id = ?",
                             (encode_json(merged), now, job_id))

        self._write(merge)

    def possible_twins(
        self, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
    ) -> list[Job]:
        """Other jobs for one record, done or still under way (not failed or gone), oldest first, that
        may hold the same bytes as job ``exclude`` with ``digests``: same ``size``, and either older and
        not hashed yet or with an equal SHA-256 or MD5; from the journal and from its archive. Filtered
        in SQL on an index, so a record with thousands of files (a camera drop: all of one size) costs a
        lookup per presign rather than decoding every job of the record."""
        with self._read() as conn:
            rows = possible_twin_rows(conn, target, record, exclude, size, digests)
        found = [row_to_job(row) for row in rows]
        # The archive after the journal, never before: a row being archived reaches the archive before
        # it leaves the journal, so in this order it is seen at least once (daemon/hotfolder/archive.py).
        archive = self._archive
        if archive is not None:
            known = {job.id for job in found}
            found.extend(job for job in archive.possible_twins(target, record, exclude, size, digests)
                         if job.id not in known)
            found.sort(key=lambda job: job.id)
        return found

    # -- the archive of old finished jobs (daemon/hotfolder/archive.py) ------------------------------------

    def archive_finished(
        self, older_than: float, *, batch: int = 500, keep_going: Callable[[], bool] = lambda: True
    ) -> int:
        """Move the jobs finished more than ``older_than`` seconds ago into the archive; returns how many.

        Batch by batch, each committed in the archive before it is deleted here (the crash rules are in
        daemon/hotfolder/archive.py). The deletes go through the group commit like any step, so workers keep
        going meanwhile; ``keep_going`` is asked between batches so that a stopping daemon need not wait
        for a long first pass (the rest moves at the next one)."""
        cutoff = self._clock() - older_than
        moved = 0
        with self._archive_lock:
            while keep_going():
                with self._read() as conn:
                    rows = conn.execute(
                        f"SELECT {COLUMNS} FROM jobs WHERE finished_at < ? ORDER BY id LIMIT ?", (cutoff, batch)
                    ).fetchall()
                if not rows:
                    break
                if self._archive is None:
                    self._archive = Archive(archive_path(self.path), clock=self._clock, check_every=FULL_CHECK_EVERY)
                if not moved:
                    self._archive.begin_pass()
                self._archive.store(rows)
                self._write(_delete_rows([row[0] for row in rows]))
                moved += len(rows)
            if moved and self._archive is not None:
                self._archive.end_pass()
                self._give_back_free_pages()
        return moved

    def _give_back_free_pages(self) -> None:
        """Truncate the pages the pass freed off the file (auto_vacuum=INCREMENTAL; a no-op on a journal
        made before that was set). Under the write lock, so no group commit has a transaction open:
        ``executescript`` is needed because ``execute`` steps this pragma once, freeing one page."""
        with self._lock:
            self._conn.executescript("PRAGMA incremental_vacuum")

    def archived_count(self) -> int:
        archive = self._archive
        return archive.count() if archive is not None else 0

    @property
    def archive_check_due(self) -> bool:
        archive = self._archive
        return archive is not None and archive.check_due

    def check_archive(self) -> tuple[str, Path] | None:
        """Check the archive whole (seconds at a million rows from a cold disk: call it from a background
        thread). None if it passed or was not due; if damaged, it is moved aside and the next pass starts
        a fresh one: returns SQLite's complaint and where the damaged file went. A twin lookup that
        meets the closed archive meanwhile raises, and its step is retried."""
        with self._archive_lock:
            archive = self._archive
            if archive is None or not archive.check_due:
                return None
            result = archive.check()
            if result == "ok":
                return None
            self._archive = None
            archive.close()
            return result, self._move_aside(archive.path)
