"""The journal as the rest of the daemon sees it: every call the runner, the service, the ``status``
command and the archiving thread make, and what each promises. ``sqlite.Journal`` is the backend in
use; another one (PostgreSQL, say, for several daemons on one share) implements this Protocol and is
chosen where the service opens the journal (``postgres.PostgresJournal``: several daemons, one database).

Words used below. *Durable*: once the call has returned, its effect survives ``kill -9`` of the
daemon and a power cut of the machine holding the store; a call that raises has changed nothing,
unless its contract says otherwise. *Any thread*: the method may be called from any thread, at the
same time as any other method, until ``close``. *Sees*: a read reflects every write that returned
(in any thread) before the read was called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hotfolder.journal.model import Job, NewJob, StepRecord
from hotfolder.pipeline import State


@runtime_checkable
class JournalBackend(Protocol):
    """Every method: any thread. Every read: sees. Reads never wait for a write's durability."""

    # -- what happened at open (the service logs it) -------------------------------------------

    @property
    def recovered_from(self) -> Path | None:
        """Where a journal found damaged at open was put aside before an empty one was started (its jobs
        are not carried over: files still in the inbox start again from ``hash``); None if it opened
        intact, and always None for a store that cannot be found damaged at open."""

    @property
    def archive_recovered_from(self) -> Path | None:
        """The same for the archive of finished jobs (lost with it: twins of files finished before)."""

    # -- intake --------------------------------------------------------------------------------

    def add_jobs(self, new_jobs: Sequence[NewJob]) -> list[Job]:
        """Create a job per file and return those created, in order; a file whose ``relpath`` already
        has an unfinished job is skipped (crash rule 6, kept against every concurrent caller, including
        another process on the same store). A store shared by several daemons also skips a path whose job
        finished at or after the file's ``seen_at`` (another daemon moved the file out after this one saw
        it; a daemon alone forgets a file it moved out, and its watcher never hands it over again).
        Durable, all or nothing: every returned job is committed (rule 1). A new id is greater than any
        id handed out before, archived ones included (rule 7)."""

    # -- finding work --------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        """The job as last committed; ``KeyError`` if the live journal has none by that id (an archived
        job is not found here)."""

    def ready_ids(self, now: float, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Up to ``limit`` ids of unfinished jobs whose ``next_attempt_at`` is at or before ``now`` and
        that are not in ``exclude``, earliest retry time first, then lowest id. The caller excludes the
        jobs its own workers hold, so one daemon never works a job twice; a store shared by several
        daemons must in addition never hand one job to two of them at once."""

    def next_wakeup(self, exclude: set[int] | frozenset[int] = frozenset()) -> float | None:
        """The earliest ``next_attempt_at`` among unfinished jobs not in ``exclude``; None if none."""

    def unfinished_count(self) -> int:
        """How many jobs are not finished (the runner is idle at 0)."""

    # -- holding a job: one node at a time (leases), one link per record at a time ------------

    def check_lease(self, job_id: int, *, confirm: bool = False) -> None:
        """Asked before each side effect of a job this daemon's worker holds: raises ``LeaseLost`` if
        another daemon may hold it now (or soon), and then the worker drops the job untouched. With
        ``confirm`` the store itself is asked, not only this daemon's memory. A store used by one daemon
        only never raises."""

    def exclusive(self, key: tuple[str, ...]) -> AbstractContextManager[None]:
        """While held, no other daemon on the store holds ``key`` (the threads of one daemon keep apart by
        their own locks). Kept for the duration of one link: links to one record never run at once."""
    def oldest_unfinished(self) -> float | None:
        """When the oldest unfinished job was created (``created_at``); None if every job is finished.
        For the metrics and the status page (how long the oldest file has waited)."""

    # -- recording steps -----------------------------------------------------------------------

    def record(self, job_id: int, step: StepRecord) -> Job:
        """Apply one step's result and return the job as it now stands. Durable: the runner starts
        the next side effect only after this returns (crash rule 2). Fields left at None keep their
        stored values; vendor ids change in the same atomic update (``vendor_replace``, then the
        removals, then ``vendor_update``), so ids merged meanwhile by ``add_vendor_ids`` are kept. A
        step into done, failed or gone finishes the job (``finished_at``), which is never changed
        again. ``KeyError`` if there is no such job; ``ValueError``, with nothing written, for a vendor
        id key the store cannot hold; ``LeaseLost``, with nothing written, if another daemon has claimed
        the job since this one did (fencing: a frozen daemon that wakes up cannot undo the new owner's
        progress)."""

    def add_vendor_ids(self, job_ids: list[int], ids: Mapping[str, Any]) -> None:
        """Merge ``ids`` into the vendor ids of every job in ``job_ids`` (``ids`` win); durable, in one
        transaction for them all (a group's link is recorded on every member or on none)."""

    # -- lookups -------------------------------------------------------------------------------

    def possible_twins(
        self, target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
    ) -> list[Job]:
        """Other jobs for one record, not failed or gone, that may hold the same bytes as job
        ``exclude``: the same ``size``, and either older and not hashed yet or with an equal SHA-256 or
        MD5; archived jobs included, each job once, lowest id first. A job being archived meanwhile is
        found all the same. Called once per presign: must be a lookup, not a scan of the record."""

    def group_jobs(self, target: str, record: str | None, group: str) -> list[Job]:
        """The jobs of one group folder that are unfinished or ended in failure, lowest id first."""

    def failed_since(self, since: float) -> int:
        """How many jobs finished in ``failed`` at or after ``since``."""

    def counts_by_state(self) -> dict[str, int]:
        """Jobs in the live journal per state value (archived ones are counted by ``archived_count``)."""

    def jobs(
        self, *, states: tuple[State, ...] | None = None, unfinished: bool = False, limit: int = 1000
    ) -> list[Job]:
        """Up to ``limit`` jobs of the live journal, newest (highest id) first, restricted to ``states``
        and to unfinished jobs when given."""

    # -- the archive of old finished jobs ------------------------------------------------------

    def archive_finished(
        self, older_than: float, *, batch: int = 500, keep_going: Callable[[], bool] = lambda: True
    ) -> int:
        """Move the jobs finished more than ``older_than`` seconds ago out of the live journal, ``batch``
        at a time, asking ``keep_going`` before each; returns how many moved. ``possible_twins`` still
        finds a moved job. A crash at any moment loses no job; one caught in both places is found once,
        and the next call finishes its move. Other methods keep working meanwhile. One pass or
        ``check_archive`` at a time: a second caller waits."""

    def archived_count(self) -> int:
        """How many jobs the archive holds."""

    @property
    def archive_check_due(self) -> bool:
        """Whether ``check_archive`` has work to do: cheap, read before calling it."""

    def check_archive(self) -> tuple[str, Path] | None:
        """Check the archive whole when due (slow: from a background thread only). None if it passed or
        was not due; if damaged, a fresh archive is started and this returns the store's complaint and
        where the damaged one went. A ``possible_twins`` that meets the switch raises, and its step is
        retried."""

    def close(self) -> None:
        """Release the store; nothing may be called after. Durable: the daemon's own journal records
        here that it stopped cleanly, which may spare the next start its whole-file check."""
