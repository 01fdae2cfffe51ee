"""The SQLite journal: one file beside its archive, implementing ``JournalBackend`` (``backend.py``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

from hotfolder.journal import changes, queries
from hotfolder.journal.archiving import Archiving
from hotfolder.journal.commit import GroupCommit
from hotfolder.journal.model import Job, NewJob, StepRecord
from hotfolder.journal.opening import open_journal, open_or_move_aside, set_meta
from hotfolder.journal.queries import Reader
from hotfolder.pipeline import State


class Journal:
    """Thread-safe. Writes go through one connection and are group-committed (``commit.py``); reads use
    a second connection under their own lock, so a worker looking for work never queues behind another
    worker's fsync. In WAL mode a read sees every committed write."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, daemon: bool = False) -> None:
        """``daemon``: this is the daemon's own journal, which records whether it stopped cleanly (the
        ``status`` command and tests open journals without touching that record)."""
        self.path = path
        self._clock = clock
        self._daemon = daemon
        path.parent.mkdir(parents=True, exist_ok=True)
        # Garbage in the main file is moved aside and a fresh journal started (see the package docstring).
        (conn, self.fully_checked), self.recovered_from = open_or_move_aside(
            path, partial(open_journal, clock=clock, check_may_wait=daemon))
        self._commits = GroupCommit(conn)
        if daemon:
            self._set_meta("clean_stop", "0")  # until close() says otherwise
        self._reader = Reader(path)
        # Finished jobs older than the daemon's ``archive_after`` (``archive.py``).
        self._archiving = Archiving(path, clock=clock, commits=self._commits, reader=self._reader)
        self.archive_recovered_from = self._archiving.recovered_from

    def _set_meta(self, key: str, value: str) -> None:
        self._commits.write(partial(set_meta, key=key, value=value), single_statement=True)

    def close(self) -> None:
        if self._daemon:
            self._set_meta("clean_stop", "1")  # the next start may skip the whole-file check
        self._archiving.close()
        self._reader.close()
        self._commits.close()

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
        return self._commits.write(changes.insert_jobs(new_jobs, self._clock()))

    def get(self, job_id: int) -> Job:
        return self._reader.run(queries.get, job_id)

    def active_job_for(self, relpath: str) -> Job | None:
        return self._reader.run(queries.active_job_for, relpath)

    def ready_ids(self, now: float, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Ids of unfinished jobs whose retry time has come, oldest retry time first."""
        return self._reader.run(queries.ready_ids, now, limit, exclude)

    def next_wakeup(self, exclude: set[int] | frozenset[int] = frozenset()) -> float | None:
        """The earliest retry time among unfinished jobs not in ``exclude``."""
        return self._reader.run(queries.next_wakeup, exclude)

    def unfinished_count(self) -> int:
        return self._reader.run(queries.unfinished_count)

    def oldest_unfinished(self) -> float | None:
        return self._reader.run(queries.oldest_unfinished)

    def counts_by_state(self) -> dict[str, int]:
        return self._reader.run(queries.counts_by_state)

    def jobs(
        self, *, states: tuple[State, ...] | None = None, unfinished: bool = False, limit: int = 1000
    ) -> list[Job]:
        return self._reader.run(queries.jobs, states, unfinished, limit)

    # -- holding a job: one daemon per SQLite journal, so the runner's own claims are enough ---

    def check_lease(self, job_id: int, *, confirm: bool = False) -> None:
        return None

    def exclusive(self, key: tuple[str, ...]) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    # -- recording steps -----------------------------------------------------------------------

    def record(self, job_id: int, step: StepRecord) -> Job:
        """Commit one step's result durably; returns the job as it now stands. One statement
        (``changes.record_step``): alone, it is its own transaction."""
        return self._commits.write(changes.record_step(job_id, step, self._clock()), single_statement=True)

    def failed_since(self, since: float) -> int:
        """How many jobs ended in failed/ at or after ``since`` (for `hotfolder once`)."""
        return self._reader.run(queries.failed_since, since)

    def group_jobs(self, target: str, record: str | None, group: str) -> list[Job]:
        """The jobs of one group folder that are unfinished or ended in failure, oldest first."""
        return self._reader.run(queries.group_jobs, target, record, group)

    def add_vendor_ids(self, job_ids: list[int], ids: Mapping[str, Any]) -> None:
        """Merge ``ids`` into several jobs' vendor ids in one durable transaction (group links)."""
        self._commits.write(changes.merge_vendor_ids(job_ids, ids, self._clock()))

    def possible_twins(
        self, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
    ) -> list[Job]:
        """Other jobs for one record, done or still under way (not failed or gone), oldest first, that
        may hold the same bytes as job ``exclude`` with ``digests``: same ``size``, and either older and
        not hashed yet or with an equal SHA-256 or MD5; from the journal and from its archive. Filtered
        in SQL on an index, so a record with thousands of files (a camera drop: all of one size) costs a
        lookup per presign rather than decoding every job of the record."""
        found = self._reader.run(queries.possible_twins, target, record, exclude, size, digests)
        return self._archiving.add_twins(found, target, record, exclude, size, digests)

    # -- the archive of old finished jobs (archive.py, archiving.py) ---------------------------

    def archive_finished(
        self, older_than: float, *, batch: int = 500, keep_going: Callable[[], bool] = lambda: True
    ) -> int:
        """Move the jobs finished more than ``older_than`` seconds ago into the archive; returns how many
        (``Archiving.move_finished``)."""
        return self._archiving.move_finished(older_than, batch=batch, keep_going=keep_going)

    def archived_count(self) -> int:
        return self._archiving.count()

    @property
    def archive_check_due(self) -> bool:
        return self._archiving.check_due

    def check_archive(self) -> tuple[str, Path] | None:
        """Check the archive whole if due; SQLite's complaint and where the damaged file went, or None
        (``Archiving.check``)."""
        return self._archiving.check()
