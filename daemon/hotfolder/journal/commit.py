"""Group commit: every write to the journal goes through one connection, and the changes of threads
that arrive while a commit waits for its fsync share the next transaction and the next fsync."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

_T = TypeVar("_T")


@dataclass(eq=False)
class _Change:
    """One caller's part of a group commit."""

    apply: Callable[[sqlite3.Connection], Any]
    single_statement: bool = False
    result: Any = None
    error: BaseException | None = None
    done: bool = False  # set by the committing thread, read by the caller after taking the write lock


class GroupCommit:
    """Thread-safe. Owns the journal's write connection from construction to ``close``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.lock = threading.Lock()  # held by the thread committing a batch of changes
        self._pending_lock = threading.Lock()
        self.pending: list[_Change] = []  # changes waiting for the next group commit

    def write(self, apply: Callable[[sqlite3.Connection], _T], *, single_statement: bool = False) -> _T:
        """Run ``apply`` in a durable transaction and return its result once it is committed.

        While one thread commits (and waits for the fsync), others queue their changes; the next
        thread to take the write lock commits every queued change in one transaction and one fsync,
        and each caller returns only after the commit holding its change has returned, so every crash
        rule of the package holds unchanged. Each change runs inside its own savepoint: one that
        raises is undone alone and its caller gets the exception; a failed COMMIT fails them all.
        A ``single_statement`` change that finds itself alone runs without BEGIN/COMMIT: SQLite makes
        one statement its own transaction, durable when the statement has run to its end.
        """
        change = _Change(apply, single_statement)
        with self._pending_lock:
            self.pending.append(change)
        with self.lock:
            if not change.done:
                with self._pending_lock:
                    batch, self.pending = self.pending, []
                self._commit_batch(batch)
        if change.error is not None:
            raise change.error
        return change.result  # type: ignore[return-value]

    @contextmanager
    def exclusive(self) -> Iterator[sqlite3.Connection]:
        """The write connection with no group commit under way, hence no transaction open: for
        statements that must run outside one (``PRAGMA incremental_vacuum``)."""
        with self.lock:
            yield self._conn

    def close(self) -> None:
        with self.lock:
            self._conn.close()

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
