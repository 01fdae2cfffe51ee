"""The outbox: a small SQLite file beside the journal that keeps every alert until each channel took it.

Why a file of its own and not the journal: alerts are this node's (each daemon tells of its own
work), the journal may live in a shared database, and a channel that fails for a week must not grow
the store every job goes through. Every write is committed with ``synchronous=FULL`` before the call
returns, so an alert made before ``kill -9`` or a power cut is sent after the restart.

What it holds:

* ``alerts``: one row per alert, its stable id and the exact JSON body (the webhook's body, signed as
  stored, so a retry sends the same bytes and receivers can drop repeats by id);
* ``deliveries``: per alert and channel, the attempts made, when to try again, and when it arrived;
* ``failures``: failed files noted but not yet sent in a digest (a digest takes them in the same
  transaction that makes its alert, so a file is in exactly one digest);
* ``runs``: each start of the daemon and whether it stopped cleanly (the unclean-stop alert);
* ``meta``: small facts, such as when the last digest was made.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("hotfolder.alerts")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, created_at REAL NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL REFERENCES alerts(id), channel TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT, delivered_at REAL, PRIMARY KEY (alert_id, channel));
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (channel, next_attempt_at) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS failures (
    job_id INTEGER NOT NULL, failed_at REAL NOT NULL, data TEXT NOT NULL, alert_id TEXT,
    PRIMARY KEY (job_id, failed_at));
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, started_at REAL NOT NULL, alive_at REAL NOT NULL,
    stopped_at REAL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

KEEP_DELIVERED = 7 * 86400.0  # delivered alerts are kept this long (to look at), then removed
FAILURES_KEPT = 10_000  # at most this many failures wait for one digest; older ones are only counted


def outbox_path(journal: Path) -> Path:
    """``journal.db`` → ``journal.db.alerts.db``: beside the journal, in the state directory."""
    return journal.with_name(journal.name + ".alerts.db")


@dataclass(frozen=True)
class Run:
    id: int
    pid: int
    started_at: float
    alive_at: float  # last sign of life written by that run


@dataclass(frozen=True)
class Delivery:
    alert_id: str
    kind: str
    body: str
    attempts: int


@dataclass(frozen=True)
class NewAlert:
    id: str
    kind: str
    created_at: float
    body: str  # the JSON document, exactly as sent


class Outbox:
    """Any thread; every write durable when it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.recovered_from: Path | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._open(path)
        except sqlite3.OperationalError:
            raise  # cannot be opened (permissions, a lock): not damage, so nothing is moved
        except sqlite3.DatabaseError:
            # Unreadable (a disk fault): alerts not yet sent are lost, the daemon's work is not. Keep it aside.
            aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
            path.rename(aside)
            for suffix in ("-wal", "-shm"):  # a new file must not pick up the old one's log
                side = path.with_name(path.name + suffix)
                if side.exists():
                    side.rename(aside.with_name(aside.name + suffix))
            self.recovered_from = aside
            self._conn = self._open(path)
        self._lock = threading.Lock()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a committed alert survives a power cut
        (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            conn.close()
            raise sqlite3.DatabaseError(f"quick_check: {verdict}")
        conn.executescript(_SCHEMA)
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- runs --------------------------------------------------------------------------------------

    def begin_run(self, pid: int, now: float) -> tuple[int, Run | None]:
        """Record this start; return its id and the previous run if that one never stopped cleanly."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, pid, started_at, alive_at FROM runs WHERE stopped_at IS NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
            conn.execute("UPDATE runs SET stopped_at = -1 WHERE stopped_at IS NULL")  # told once
            run_id = conn.execute(
                "INSERT INTO runs (pid, started_at, alive_at) VALUES (?, ?, ?)", (pid, now, now)
            ).lastrowid
            conn.execute("DELETE FROM runs WHERE id < ?", (int(run_id or 0) - 100,))
        return int(run_id or 0), None if row is None else Run(*row)

    def alive(self, run_id: int, now: float) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET alive_at = ? WHERE id = ?", (now, run_id))

    def end_run(self, run_id: int, now: float) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET stopped_at = ?, alive_at = ? WHERE id = ?", (now, now, run_id))

    # -- failures waiting for their digest ---------------------------------------------------------

    def note_failures(self, failures: Iterable[Mapping[str, Any]]) -> int:
        """Keep failed files (each a mapping with job_id and failed_at) for the next digest; a file
        noted twice (the event and the catch-up after a crash) is kept once. Returns how many were new."""
        rows = [(f["job_id"], f["failed_at"], json.dumps(f, sort_keys=True)) for f in failures]
        if not rows:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO failures (job_id, failed_at, data) VALUES (?, ?, ?)", rows)
            return conn.total_changes - before

    def oldest_pending_failure(self) -> float | None:
        (oldest,) = self._read("SELECT MIN(failed_at) FROM failures WHERE alert_id IS NULL")[0]
        return None if oldest is None else float(oldest)

    def pending_failures(self) -> tuple[list[dict[str, Any]], int]:
        """The failures no digest has taken yet, oldest first (at most FAILURES_KEPT), and how many in all."""
        rows = self._read(
            "SELECT data FROM failures WHERE alert_id IS NULL ORDER BY failed_at, job_id LIMIT ?", (FAILURES_KEPT,)
        )
        (count,) = self._read("SELECT COUNT(*) FROM failures WHERE alert_id IS NULL")[0]
        return [json.loads(data) for (data,) in rows], int(count)

    # -- alerts and their deliveries ---------------------------------------------------------------

    def add(self, alert: NewAlert, channels: Sequence[str], *, takes_failures: bool = False) -> None:
        """Store an alert with one delivery per channel; a digest marks the pending failures as its own."""
        with self._transaction() as conn:
            conn.execute("INSERT INTO alerts (id, kind, created_at, body) VALUES (?, ?, ?, ?)",
                         (alert.id, alert.kind, alert.created_at, alert.body))
            conn.executemany("INSERT INTO deliveries (alert_id, channel) VALUES (?, ?)",
                             [(alert.id, channel) for channel in channels])
            if takes_failures:
                conn.execute("UPDATE failures SET alert_id = ? WHERE alert_id IS NULL", (alert.id,))
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_digest_at', ?)",
                             (alert.created_at,))

    def last_digest_at(self) -> float | None:
        rows = self._read("SELECT value FROM meta WHERE key = 'last_digest_at'")
        return float(rows[0][0]) if rows else None

    def due(self, channel: str, now: float, limit: int = 20) -> list[Delivery]:
        rows = self._read(
            "SELECT d.alert_id, a.kind, a.body, d.attempts FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.channel = ? AND d.delivered_at IS NULL AND d.next_attempt_at <= ? "
            "ORDER BY a.created_at, a.id LIMIT ?",
            (channel, now, limit),
        )
        return [Delivery(*row) for row in rows]

    def next_due(self, channel: str) -> float | None:
        (when,) = self._read(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE channel = ? AND delivered_at IS NULL", (channel,)
        )[0]
        return None if when is None else float(when)

    def delivered(self, alert_id: str, channel: str, now: float) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE deliveries SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE alert_id = ? AND channel = ?", (now, alert_id, channel))

    def attempt_failed(self, alert_id: str, channel: str, retry_at: float, error: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                "WHERE alert_id = ? AND channel = ?", (retry_at, error, alert_id, channel))

    def forget_channels_but(self, channels: Sequence[str]) -> int:
        """Drop undelivered deliveries to channels no longer configured; returns how many."""
        marks = ", ".join("?" * len(channels))
        with self._transaction() as conn:
            return conn.execute(
                f"DELETE FROM deliveries WHERE delivered_at IS NULL AND channel NOT IN ({marks})", tuple(channels)
            ).rowcount

    def undelivered(self) -> dict[str, int]:
        """Alerts not yet taken, per channel (for the log at stop and for tests)."""
        rows = self._read("SELECT channel, COUNT(*) FROM deliveries WHERE delivered_at IS NULL GROUP BY channel")
        return {channel: int(count) for channel, count in rows}

    def purge(self, now: float) -> None:
        """Forget alerts every channel took more than KEEP_DELIVERED ago, and their failures."""
        with self._transaction() as conn:
            old = "SELECT alert_id FROM deliveries GROUP BY alert_id HAVING MAX(delivered_at IS NULL) = 0 " \
                  "AND MAX(delivered_at) < ?"
            cutoff = now - KEEP_DELIVERED
            conn.execute(f"DELETE FROM failures WHERE alert_id IN ({old})", (cutoff,))
            conn.execute(f"DELETE FROM alerts WHERE id IN ({old})", (cutoff,))
            conn.execute("DELETE FROM deliveries WHERE alert_id NOT IN (SELECT id FROM alerts)")
