"""The PostgreSQL journal: one database shared by several daemons on one share, implementing
``JournalBackend`` (``backend.py``) with leases and fencing (the package's essay, "Several processes").

A node *claims* a ready job in one statement (``FOR UPDATE SKIP LOCKED``): it becomes the job's owner
with a lease that ends ``lease`` seconds later on the database's clock, and the job's *generation* goes
up by one. A heartbeat thread renews the leases it holds. Every step result is written compare-and-set
on that generation (``record``): once another node has claimed the job, the old owner's writes change
nothing and raise ``LeaseLost``. ``check_lease`` is asked before each side effect; ``exclusive`` keeps
links to one record apart across nodes with a transaction-scoped advisory lock.

Every call waits while the database cannot be reached (a restart, a cut cable), saying so in the log
once per outage, and retries with backoff until it answers or the journal is closed. A write whose
answer was lost with its connection is simply made again: each is idempotent (intake skips a path with
an unfinished job; a step result sets absolute values and merges ids; a claim made twice is one claim
with a later generation).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg_pool import ConnectionPool, PoolTimeout

from hotfolder.journal.model import Job, LeaseLost, NewJob, NodeInfo, StepRecord
from hotfolder.journal.pgschema import DB_NOW, JOB_COLUMNS, migrate
from hotfolder.journal.rows import decode_json, encode_json, row_to_job, step_assignments
from hotfolder.pipeline import TERMINAL_STATES, State

log = structlog.get_logger("hotfolder.journal")
# The pool warns at every failed reconnection attempt (every few seconds of an outage); this module says
# once per outage why the daemon waits, and once when the database answers again.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

_T = TypeVar("_T")

INTAKE_LOCK = 0x686F7466_00000002  # ids are handed out in commit order (the twin rule needs it)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
_BACKOFF_FIRST, _BACKOFF_MAX = 0.2, 1.0  # plus the pool's 3 s wait: a look every few seconds
# A link lock's session is ended by the server after this long idle inside its transaction: a node
# frozen for good while holding one must not block that record's links for ever. Far above one link's
# requests (each bounded by its target's timeout).
_LOCK_IDLE_LIMIT_MS = 300_000


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


@dataclass
class _Lease:
    generation: int
    expires: float  # time.monotonic(): the lease's end as this node can count on it


class PostgresJournal:
    """Thread-safe: every call takes a connection of its own from a pool."""

    def __init__(self, url: str, *, node: str, lease: float = 30.0, clock: Callable[[], float] = time.time,
                 daemon: bool = False, pool_size: int = 8, connect_timeout: float = 10.0) -> None:
        """``node``: this daemon's name among those sharing the database (unique per running daemon).
        ``daemon``: this is a running daemon (it registers as a node and renews leases); the ``status``
        command and tests open the journal without."""
        self.node = node
        self.lease = lease
        self._url = url  # holds the password: never logged (psycopg's errors do not repeat it)
        self._clock = clock
        self._daemon = daemon
        self._closing = threading.Event()
        self._held: dict[int, _Lease] = {}
        self._held_lock = threading.Lock()
        self._outage_since: float | None = None
        self._outage_lock = threading.Lock()
        self.waiting_reason: str | None = None  # why calls are waiting now (None: the database answers)
        # Reconnection is ours (``_retry``): the pool only hands out connections that work.
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "application_name": f"hotfolder {node}"[:63],
                    "connect_timeout": max(1, int(connect_timeout))},
            # A short wait for a connection: an outage is noticed (and said) within seconds, then waited out.
            # Each reconnection attempt gives up after two seconds and the next call starts a fresh one: left
            # to itself, the pool's backoff doubles without bound, and after a long outage it would come back
            # minutes after the database did.
            reconnect_timeout=2.0, timeout=3.0, name=f"hotfolder-{node}",
        )
        self._pool.open(wait=False)
        try:
            self._retry(self._migrate)
        except BaseException:
            self._pool.close()
            raise
        self._heartbeat: threading.Thread | None = None
        if daemon:
            self._retry(self._register)
            self._heartbeat = threading.Thread(target=self._renew_forever, name="journal-leases", daemon=True)
            self._heartbeat.start()

    # -- what happened at open: a database is never found damaged by us ----------------------------

    recovered_from: Path | None = None
    archive_recovered_from: Path | None = None

    # -- connections and the wait for an unavailable database ----------------------------------

    def _retry(self, call: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """``call`` on a pooled connection, again and again while the database cannot be reached."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                with self._pool.connection() as conn:
                    result = call(conn)
                self._back_online()
                return result
            except _UNAVAILABLE as error:
                delay = self._wait_out(error, delay)

    def _wait_out(self, error: BaseException, delay: float) -> float:
        """The database did not answer: say so, wait ``delay``, and return the next delay; re-raises
        ``error`` once the journal is closing (nobody waits for the answer any more)."""
        if self._closing.is_set():
            raise error
        self._waiting(error)
        self._closing.wait(delay)
        return min(delay * 2, _BACKOFF_MAX)

    def _waiting(self, error: BaseException) -> None:
        with self._outage_lock:
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
        if first and isinstance(error, PoolTimeout):
            error = self._why_no_connection() or error  # the pool says only that none came
        reason = " ".join(str(error).split()) or type(error).__name__
        with self._outage_lock:
            self.waiting_reason = f"the journal database does not answer: {reason}"
        if first:
            log.error("journal database unavailable; nothing leaves the inbox and no step starts until it "
                      "answers, retrying", node=self.node, reason=reason)

    def _why_no_connection(self) -> BaseException | None:
        """What a connection of our own is told (refused, unknown host, password refused), for the log."""
        try:
            psycopg.connect(self._url, connect_timeout=3).close()
        except psycopg.Error as error:
            return error
        return None

    def _back_online(self) -> None:
        if self._outage_since is None:
            return
        with self._outage_lock:
            since, self._outage_since, self.waiting_reason = self._outage_since, None, None
        if since is not None:
            log.warning("journal database answers again", node=self.node,
                        unavailable_seconds=round(time.monotonic() - since, 1))

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        before = migrate(conn)
        if before == 0:
            log.info("journal database schema created", node=self.node)

    def close(self) -> None:
        """Stop renewing, give back the leases this node holds (another node may take them at once),
        and record the node as stopped."""
        if self._daemon:
            with contextlib.suppress(*_UNAVAILABLE):
                self._give_back_all()
        self._closing.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5.0)
        self._pool.close()

    def _give_back_all(self) -> None:
        with self._pool.connection(timeout=5.0) as conn, conn.transaction():
            conn.execute("UPDATE jobs SET owner = NULL, lease_until = NULL WHERE owner = %s", (self.node,))
            conn.execute(f"UPDATE nodes SET stopped_at = {DB_NOW}, heartbeat_at = {DB_NOW} WHERE name = %s",
                         (self.node,))
        with self._held_lock:
            self._held.clear()

    # -- the node and its leases ---------------------------------------------------------------

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        """This node is up; leases left under its name by an earlier run (killed) are given back."""
        with conn.transaction():
            conn.execute(
                f"INSERT INTO nodes (name, host, pid, started_at, heartbeat_at) VALUES (%s, %s, %s, {DB_NOW}, "
                f"{DB_NOW}) ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at, stopped_at = NULL",
                (self.node, socket.gethostname(), os.getpid()))
            conn.execute("UPDATE jobs SET owner = NULL, lease_until = NULL WHERE owner = %s", (self.node,))

    def _renew_forever(self) -> None:
        every = self.lease / 3
        while not self._closing.wait(every):
            try:
                self._renew()
            except _UNAVAILABLE as error:
                self._waiting(error)  # leases run out locally: no step starts until the database answers
            except Exception:
                log.exception("lease renewal failed", node=self.node)

    def _renew(self) -> None:
        sent = time.monotonic()
        with self._pool.connection(timeout=self.lease / 3) as conn, conn.transaction():
            conn.execute(f"UPDATE nodes SET heartbeat_at = {DB_NOW} WHERE name = %s", (self.node,))
            rows = conn.execute(
                f"UPDATE jobs SET lease_until = {DB_NOW} + %s WHERE owner = %s AND lease_until > {DB_NOW} "
                "RETURNING id, generation", (self.lease, self.node)).fetchall()
        self._back_online()
        renewed = dict(rows)
        with self._held_lock:
            for job_id, lease in self._held.items():
                if renewed.get(job_id) == lease.generation:
                    lease.expires = sent + self.lease
                else:
                    # Expired, or claimed by another node meanwhile: no step may start. The generation
                    # is kept, so a result still under way is written only if nobody claimed the job since.
                    lease.expires = 0.0

    def check_lease(self, job_id: int, *, confirm: bool = False) -> None:
        """Raise ``LeaseLost`` unless this node holds job ``job_id`` for at least a third of a lease
        more (the step about to start has that long before another node may claim the job).
        ``confirm``: ask the database too (inside a link lock, before a record write)."""
        with self._held_lock:
            lease = self._held.get(job_id)
        if lease is None:
            raise LeaseLost(job_id, f"not held by node {self.node}")
        if time.monotonic() + self.lease / 3 > lease.expires:
            raise LeaseLost(job_id, f"node {self.node}'s lease has run out (renewals did not reach the database)")
        if confirm and not self._retry(lambda conn: conn.execute(
                f"SELECT 1 FROM jobs WHERE id = %s AND owner = %s AND generation = %s AND lease_until > {DB_NOW}",
                (job_id, self.node, lease.generation)).fetchone()):
            raise LeaseLost(job_id, f"another node holds it now (generation {lease.generation} is past)")

    def exclusive(self, key: tuple[str, ...]) -> AbstractContextManager[None]:
        return self._exclusive(key)

    @contextlib.contextmanager
    def _exclusive(self, key: tuple[str, ...]) -> Iterator[None]:
        """One holder of ``key`` at a time across every node: a transaction-scoped advisory lock, held by
        a connection of its own for the duration. If the database goes away meanwhile the lock is gone
        with it; the section still finishes (its side effect may be under way), and its result is then
        written compare-and-set like any other."""
        digest = hashlib.blake2b("\x1f".join(key).encode("utf-8", "surrogateescape"), digest_size=8).digest()
        lock_id = int.from_bytes(digest, "big", signed=True)

        def take(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
            conn.execute("BEGIN")
            try:
                conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = {_LOCK_IDLE_LIMIT_MS}")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id,))
            except BaseException:
                with contextlib.suppress(*_UNAVAILABLE):
                    conn.execute("ROLLBACK")
                raise
            return conn

        with self._locked_connection(take) as conn:
            try:
                yield
            finally:
                with contextlib.suppress(*_UNAVAILABLE):
                    conn.execute("COMMIT")

    @contextlib.contextmanager
    def _locked_connection(self, take: Callable[[psycopg.Connection[Any]], _T]) -> Iterator[_T]:
        delay = _BACKOFF_FIRST
        while True:
            try:
                conn = self._pool.getconn()
            except _UNAVAILABLE as error:
                delay = self._wait_out(error, delay)
                continue
            try:
                held = take(conn)
            except _UNAVAILABLE as error:
                self._pool.putconn(conn)
                delay = self._wait_out(error, delay)
                continue
            except BaseException:
                self._pool.putconn(conn)
                raise
            break
        self._back_online()
        try:
            yield held
        finally:
            self._pool.putconn(conn)

    # -- intake --------------------------------------------------------------------------------

    def add_jobs(self, new_jobs: Sequence[NewJob]) -> list[Job]:
        """Under the intake lock, so that ids are committed in the order they are handed out: a job never
        meets a twin with a lower id that it could not see when it looked (``twins.py``)."""
        now = self._clock()

        def insert(conn: psycopg.Connection[Any]) -> list[Job]:
            added: list[Job] = []
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (INTAKE_LOCK,))
                for new in new_jobs:
                    relpath = _b(new.relpath)
                    # Seen by this node's watcher, then moved out by another node before this insert: skipped.
                    seen = float("inf") if new.seen_at is None else new.seen_at  # None: no such check
                    row = conn.execute(
                        "INSERT INTO jobs (target, record, grp, name, relpath, size, mtime_ns, state, last_error, "
                        "created_at, updated_at) SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s "
                        "WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE finished_at >= %s AND relpath = %s) "
                        f"ON CONFLICT (relpath) WHERE finished_at IS NULL DO NOTHING RETURNING {JOB_COLUMNS}",
                        (_b(new.target), _b(new.record), _b(new.group), _b(new.name), relpath, new.size,
                         new.mtime_ns, new.state.value, encode_json(new.last_error), now, now, seen, relpath),
                    ).fetchone()
                    if row is not None:
                        added.append(row_to_job(row))
            return added

        return self._retry(insert)

    # -- finding work --------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        row = self._retry(lambda conn: conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone())
        if row is None:
            raise KeyError(job_id)
        return row_to_job(row)

    def active_job_for(self, relpath: str) -> Job | None:
        row = self._retry(lambda conn: conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE relpath = %s AND finished_at IS NULL", (_b(relpath),)).fetchone())
        return None if row is None else row_to_job(row)

    def ready_ids(self, now: float, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Claims them: each id returned is leased to this node under a new generation, and no other node
        gets it until the lease ends or this node gives it back (a wait, a finish, a stop)."""
        sent = time.monotonic()

        def claim(conn: psycopg.Connection[Any]) -> list[tuple[int, int]]:
            return conn.execute(
                "WITH picked AS ("
                "  SELECT id FROM jobs WHERE finished_at IS NULL AND next_attempt_at <= %(now)s"
                f"  AND (owner IS NULL OR owner = %(node)s OR lease_until <= {DB_NOW}) AND id <> ALL(%(exclude)s)"
                "  ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
                " claimed AS ("
                f"  UPDATE jobs SET owner = %(node)s, lease_until = {DB_NOW} + %(lease)s,"
                "   generation = jobs.generation + 1 FROM picked WHERE jobs.id = picked.id"
                "   RETURNING jobs.id, jobs.generation, jobs.state, jobs.next_attempt_at),"
                " logged AS ("
                f"  INSERT INTO claims (job_id, generation, node, state, claimed_at)"
                f"   SELECT id, generation, %(node)s, state, {DB_NOW} FROM claimed)"
                " SELECT id, generation FROM claimed ORDER BY next_attempt_at, id",
                {"now": now, "node": self.node, "lease": self.lease, "exclude": sorted(exclude), "limit": limit},
            ).fetchall()

        claimed = self._retry(claim)
        with self._held_lock:
            for job_id, generation in claimed:
                self._held[job_id] = _Lease(generation, sent + self.lease)
        return [job_id for job_id, _ in claimed]

    def next_wakeup(self, exclude: set[int] | frozenset[int] = frozenset()) -> float | None:
        """A job another node holds counts from when its lease ends (the database's clock: a node whose
        clock is off by some seconds looks that much early or late, and its runner looks every second
        anyway), so a dead node's jobs are taken over as soon as its leases end."""
        row = self._retry(lambda conn: conn.execute(
            f"SELECT min(CASE WHEN owner IS NULL OR owner = %s OR lease_until <= {DB_NOW} THEN next_attempt_at "
            "ELSE greatest(next_attempt_at, lease_until) END) FROM jobs WHERE finished_at IS NULL AND id <> ALL(%s)",
            (self.node, sorted(exclude))).fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def unfinished_count(self) -> int:
        return self._count("SELECT count(*) FROM jobs WHERE finished_at IS NULL")

    def oldest_unfinished(self) -> float | None:
        row = self._retry(lambda conn: conn.execute("SELECT min(created_at) FROM jobs WHERE finished_at IS NULL")
                          .fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def _count(self, query: str, args: Sequence[Any] = ()) -> int:
        row = self._retry(lambda conn: conn.execute(query, args).fetchone())
        return int(row[0]) if row else 0

    # -- recording steps -----------------------------------------------------------------------

    def record(self, job_id: int, step: StepRecord) -> Job:
        """Compare-and-set on the generation this node claimed the job under: ``LeaseLost`` once another
        node has claimed it. A job this node does not hold (written by a tool, not a worker) is written
        only while no node holds it. A wait or a finish gives the lease back in the same write."""
        with self._held_lock:
            lease = self._held.get(job_id)
        if lease is None and self._daemon:
            # A running daemon writes only what its workers claimed; a claim it no longer knows of was
            # given back or refused, and writing it now would bypass the generation check.
            raise LeaseLost(job_id, f"not claimed by node {self.node}")
        now = self._clock()
        gives_back = step.state in TERMINAL_STATES or step.next_attempt_at > now
        assignments, args = step_assignments(step, now, "%s", _b)
        if gives_back:
            assignments.append("owner = NULL, lease_until = NULL")
        elif lease is not None:
            assignments.append(f"lease_until = {DB_NOW} + %s")
            args.append(self.lease)
        if lease is not None:
            # Finished jobs are never written again: a finish is final even for the generation that made it.
            where = "id = %s AND generation = %s AND (owner = %s OR owner IS NULL) AND finished_at IS NULL"
            where_args: list[Any] = [job_id, lease.generation, self.node]
        else:
            where = f"id = %s AND (owner IS NULL OR lease_until <= {DB_NOW})"
            where_args = [job_id]
        changes_vendor = bool(step.vendor_update or step.extra_vendor_removals or step.vendor_replace is not None)

        def write(conn: psycopg.Connection[Any]) -> Any:
            with conn.transaction():
                vendor_args: list[Any] = []
                vendor_sql: list[str] = []
                if changes_vendor:
                    row = conn.execute(f"SELECT vendor FROM jobs WHERE {where} FOR UPDATE", where_args).fetchone()
                    if row is None:
                        return None
                    vendor_sql, vendor_args = ["vendor = %s"], [encode_json(_merged_vendor(decode_json(row[0]), step))]
                return conn.execute(
                    f"UPDATE jobs SET {', '.join(assignments + vendor_sql)} WHERE {where} RETURNING {JOB_COLUMNS}",
                    [*args, *vendor_args, *where_args]).fetchone()

        row = self._retry(write)
        if row is None:
            return self._refused(job_id, lease, step)
        with self._held_lock:
            if gives_back:
                self._held.pop(job_id, None)
        return row_to_job(row)

    def _refused(self, job_id: int, lease: _Lease | None, step: StepRecord) -> Job:
        """A step result that was not written: the job as this very write left it, when its answer was lost
        with a connection and the write was made again; otherwise ``KeyError`` (no such job) or
        ``LeaseLost`` (another node's now, or finished)."""
        row = self._retry(lambda conn: conn.execute(
            f"SELECT generation, owner, {JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone())
        if row is None:
            raise KeyError(job_id)
        generation, owner, job = row[0], row[1], row_to_job(row[2:])
        with self._held_lock:
            self._held.pop(job_id, None)
        if lease is not None and generation == lease.generation and job.finished and job.state is step.state:
            return job
        if lease is None:
            raise LeaseLost(job_id, f"node {owner} holds it" if owner else "it is finished")
        if generation == lease.generation:
            raise LeaseLost(job_id, "it is finished")
        raise LeaseLost(job_id, f"claimed again (generation {generation}, node {owner}) after this node's "
                                f"generation {lease.generation}")

    def add_vendor_ids(self, job_ids: list[int], ids: Mapping[str, Any]) -> None:
        """Not fenced: a merge of ids found at the vendor (a group's link recorded on every member, held by
        whichever node) is true whoever writes it, and ``record`` keeps ids merged meanwhile."""
        now = self._clock()

        def merge(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                rows = conn.execute("SELECT id, vendor FROM jobs WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
                                    (sorted(set(job_ids)),)).fetchall()
                for job_id, current in rows:
                    conn.execute("UPDATE jobs SET vendor = %s, updated_at = %s WHERE id = %s",
                                 (encode_json({**(decode_json(current) or {}), **ids}), now, job_id))

        self._retry(merge)

    # -- lookups -------------------------------------------------------------------------------

    def possible_twins(
        self, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
    ) -> list[Job]:
        where = (
            "target = %(target)s AND record IS NOT DISTINCT FROM %(record)s AND size = %(size)s AND id <> %(me)s "
            "AND state NOT IN (%(failed)s, %(to_failed)s, %(gone)s) AND ((digests IS NULL AND id < %(me)s) "
            "OR (digests::json ->> 'sha256') = %(sha256)s OR (digests::json ->> 'md5') = %(md5)s)"
        )
        args = {"target": _b(target), "record": _b(record), "size": size, "me": exclude,
                "failed": State.FAILED.value, "to_failed": State.TO_FAILED.value, "gone": State.GONE.value,
                "sha256": digests.get("sha256"), "md5": digests.get("md5")}
        rows = self._retry(lambda conn: conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} UNION ALL "
            f"SELECT {JOB_COLUMNS} FROM archived_jobs WHERE {where} ORDER BY id", args).fetchall())
        return [row_to_job(row) for row in rows]

    def group_jobs(self, target: str, record: str | None, group: str) -> list[Job]:
        return self._jobs_where(
            "target = %s AND record IS NOT DISTINCT FROM %s AND grp = %s AND (finished_at IS NULL OR state = %s) "
            "ORDER BY id", (_b(target), _b(record), _b(group), State.FAILED.value))

    def _jobs_where(self, condition: str, args: Sequence[Any]) -> list[Job]:
        rows = self._retry(lambda conn: conn.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE {condition}", args).fetchall())
        return [row_to_job(row) for row in rows]

    def failed_since(self, since: float) -> int:
        return self._count("SELECT count(*) FROM jobs WHERE state = %s AND finished_at >= %s",
                           (State.FAILED.value, since))

    def counts_by_state(self) -> dict[str, int]:
        rows = self._retry(lambda conn: conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        return {state: int(count) for state, count in rows}

    def jobs(
        self, *, states: tuple[State, ...] | None = None, unfinished: bool = False, limit: int = 1000
    ) -> list[Job]:
        conditions = ["true"]
        args: list[Any] = []
        if states:
            conditions.append("state = ANY(%s)")
            args.append([state.value for state in states])
        if unfinished:
            conditions.append("finished_at IS NULL")
        args.append(limit)
        return self._jobs_where(f"{' AND '.join(conditions)} ORDER BY id DESC LIMIT %s", args)

    def holders(self, job_id: int) -> list[tuple[str, str]]:
        """Which nodes held the job, in order: (node, the step it was at when claimed), once per claim."""
        rows = self._retry(lambda conn: conn.execute(
            "SELECT node, state FROM claims WHERE job_id = %s ORDER BY generation", (job_id,)).fetchall())
        return [(node, state) for node, state in rows]

    def nodes(self) -> list[NodeInfo]:
        """Every node that ever used this database, with how many jobs each holds now."""
        rows = self._retry(lambda conn: conn.execute(
            "SELECT n.name, n.host, n.pid, n.started_at, n.heartbeat_at, n.stopped_at, "
            f"(SELECT count(*) FROM jobs j WHERE j.owner = n.name AND j.lease_until > {DB_NOW}) "
            "FROM nodes n ORDER BY n.name").fetchall())
        return [NodeInfo(*row) for row in rows]

    # -- the archive: a second table in the same database ---------------------------------------

    def archive_finished(
        self, older_than: float, *, batch: int = 500, keep_going: Callable[[], bool] = lambda: True
    ) -> int:
        """Each batch moves in one transaction (deleted here and inserted there, or neither)."""
        cutoff = self._clock() - older_than
        moved = 0

        def move(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                cursor = conn.execute(
                    "WITH gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE finished_at < %s "
                    f"ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}) "
                    f"INSERT INTO archived_jobs ({JOB_COLUMNS}) SELECT {JOB_COLUMNS} FROM gone", (cutoff, batch))
                return cursor.rowcount

        while keep_going():
            count = self._retry(move)
            moved += count
            if count < batch:
                break
        return moved

    def archived_count(self) -> int:
        return self._count("SELECT count(*) FROM archived_jobs")

    @property
    def archive_check_due(self) -> bool:
        return False  # PostgreSQL checks its own pages (and a replica or a backup is the site's remedy)

    def check_archive(self) -> tuple[str, Path] | None:
        return None


def _merged_vendor(current: Mapping[str, Any] | None, step: StepRecord) -> dict[str, Any]:
    """The job's vendor ids after ``step``: replaced, then the removals, then the updates."""
    merged = dict(step.vendor_replace) if step.vendor_replace is not None else dict(current or {})
    for key in step.extra_vendor_removals:
        merged.pop(key, None)
    merged.update(step.vendor_update or {})
    return merged
