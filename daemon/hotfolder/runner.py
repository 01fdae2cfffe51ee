"""The worker pool: takes ready jobs from the journal and runs them one step at a time.

For each step a worker reads the job, runs the handler its state names in the step table
(:mod:`hotfolder.steps`, where the way a job travels reads top to bottom), asks
``pipeline.decide`` what the outcome means, and commits the decision to the journal before it
starts the next side effect. A job stays with
one worker while it moves forward without waiting, so the presigned URL it keeps in memory
is still there for the upload; a job that must wait (backoff) goes back to the journal,
from where any worker picks it up when its time comes.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from hotfolder.config import Settings
from hotfolder.errors import StepError
from hotfolder.events import (
    BytesSent,
    Event,
    EventBus,
    FileDone,
    FileFailed,
    FileQueued,
    FileRefused,
    StepEnded,
    StepStarted,
    TargetHeld,
    TargetPaused,
    TargetReleased,
    TargetResumed,
)
from hotfolder.groups import GroupFolders
from hotfolder.jobtools import JobTools, StepResult, printable
from hotfolder.journal import Job, JournalBackend, LeaseLost, NewJob, StepRecord
from hotfolder.layout import LayoutError, place
from hotfolder.leaving import Leaving, plan_destination
from hotfolder.limits import TargetUnavailable
from hotfolder.linking import Answer, LinkParked
from hotfolder.liveness import Liveness, progress
from hotfolder.logsetup import redact, redact_value
from hotfolder.pipeline import MOVE_STATES, Decision, Outcome, OutcomeKind, RetryPolicy, State, decide
from hotfolder.steps import Steps
from hotfolder.transfer.progress import Meter, metering
from hotfolder.vendors.base import RATE_LIMIT_STATUSES, Vendor
from hotfolder.watch.mounts import AttributeCache

log = structlog.get_logger("hotfolder.runner")


class Runner:
    def __init__(
        self,
        settings: Settings,
        journal: JournalBackend,
        adapters: Mapping[str, Vendor],
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        on_file_left_inbox: Callable[[Path], None] | None = None,
        writers_checked: Callable[[], bool] = lambda: True,
        cache: AttributeCache | None = None,
        events: EventBus | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.adapters = adapters
        self.policy = _policy(settings)
        self.liveness = liveness if liveness is not None else Liveness(stuck_after=float("inf"))
        self._clock = clock
        self._jitter = jitter
        self.events = events if events is not None else EventBus()
        self._tools = JobTools(settings, journal, adapters, clock)
        groups = GroupFolders(self._tools)
        leaving = Leaving(self._tools, groups, on_file_left_inbox=on_file_left_inbox,
                          cache_lag=cache.settle_lag if cache is not None else 0.0)
        self._steps = Steps(self._tools, groups, leaving, writers_checked=writers_checked,
                            deliver_link=self._deliver_link).table()
        self._wake = threading.Condition()
        self._in_flight: set[int] = set()  # claimed by a worker
        # Jobs waiting for a paused or removed target, by target, and those woken since (claimed before
        # the journal's retry times say): the target resumed, or a reload brought it back.
        self._parked: dict[str, set[int]] = {}
        self._woken: set[int] = set()
        # Targets a person paused (the status page), each with the ids of its jobs set aside meanwhile (not
        # claimed until the target is released). Read without the lock by drive(): a stale answer costs a step.
        self._held: dict[str, set[int]] = {}
        # Jobs whose last step failed for a while (an error worth another try), by target: when the
        # target resumes after an outage they go on at once rather than after their own backoff.
        self._setback: dict[str, set[int]] = {}
        self._stopping = threading.Event()
        self._threads: dict[int, threading.Thread] = {}
        self.events.subscribe(self._on_event)

    # -- intake --------------------------------------------------------------------------------

    def submit(self, path: Path, stat: os.stat_result) -> Job | None:
        """A settled file from the watcher: journal it as a job (once per path)."""
        added = self.submit_many([(path, stat)])
        return added[0] if added else None

    def submit_many(self, files: Sequence[tuple[Path, os.stat_result]]) -> list[Job]:
        """Settled files from the watcher, journaled in one transaction (one fsync for all).

        A file the layout refuses (no record folder, unknown target, a record id that cannot be
        used) becomes a job that starts at ``to_failed``: it goes to failed/ with the reason, like
        every other file that cannot be delivered, and ``hotfolder retry`` brings it back.
        """
        new_jobs = [new for path, stat in files if (new := self._new_job(path, stat)) is not None]
        added = self.journal.add_jobs(new_jobs) if new_jobs else []
        if added:
            self.poke()  # before the events: logging a large batch would hold back the workers' first claims
        for job in added:
            if job.state is State.TO_FAILED:
                self.events.emit(FileRefused(job, str((job.last_error or {}).get("reason"))))
            else:
                self.events.emit(FileQueued(job))
        return added

    def submit_incomplete(self, path: Path, stat: os.stat_result, reason: str) -> Job | None:
        """A file that stayed incomplete past ``watch.incomplete_timeout``: to failed/ with the reason."""
        new = self._new_job(path, stat, refusal=reason)
        added = self.journal.add_jobs([new]) if new is not None else []
        if added:
            self.poke()
            self.events.emit(FileRefused(added[0], reason, incomplete=True))
        return added[0] if added else None

    def _new_job(self, path: Path, stat: os.stat_result, *, refusal: str | None = None) -> NewJob | None:
        try:
            relative = path.relative_to(self.settings.inbox)
        except ValueError:
            log.warning("file outside the inbox ignored", file=printable(str(path)))
            return None
        try:
            placement = place(self.settings.inbox, path, self.settings.targets)
        except LayoutError as error:
            refusal = error.reason
            placement = None
        if refusal is not None:
            return NewJob(
                target=relative.parts[0], record=placement.record if placement else None,
                group=placement.group if placement else None, name=relative.name,
                relpath=relative.as_posix(), size=stat.st_size, mtime_ns=stat.st_mtime_ns, state=State.TO_FAILED,
                last_error={"step": "intake", "reason": refusal, "status": None, "at": self._clock()},
            )
        assert placement is not None
        adapter = self.adapters.get(placement.target)
        if placement.group is not None and adapter is not None and placement.name == adapter.manifest_name:
            return None  # the folder's description, read when the folder is linked; never uploaded
        return NewJob(
            target=placement.target, record=placement.record, group=placement.group, name=placement.name,
            relpath=placement.relpath.as_posix(), size=stat.st_size, mtime_ns=stat.st_mtime_ns, seen_at=self._clock(),
        )

    def poke(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- the pool ------------------------------------------------------------------------------

    def start(self) -> None:
        with self._wake:
            for number in range(self.settings.workers):
                if number not in self._threads or not self._threads[number].is_alive():
                    thread = threading.Thread(target=self._work, args=(number,), name=f"worker-{number}", daemon=True)
                    thread.start()
                    self._threads[number] = thread

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.poke()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def reload(self, settings: Settings) -> None:
        """Take new settings (a reload): limits, retries and workers now; jobs in flight go on.

        The caller has already put the new targets' adapters into the mapping the runner was given;
        jobs parked for a target that is there again are woken.
        """
        self.settings = settings
        self._tools.settings = settings
        self.policy = _policy(settings)
        for name in list(self._parked):
            if name in self.adapters:
                self.wake_target(name)
        self.start()  # more workers if there are more; surplus ones leave after their job
        self.poke()

    def wake_target(self, target: str) -> None:
        with self._wake:
            self._woken |= self._parked.pop(target, set())
            self._wake.notify_all()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TargetResumed):
            with self._wake:
                self._woken |= self._setback.pop(event.target, set())
            self.wake_target(event.target)

    def workers_missing(self) -> int:
        """How many of the configured worker threads are not running (a health check wants 0)."""
        with self._wake:
            alive = sum(thread.is_alive() for thread in self._threads.values())
        return max(0, self.settings.workers - alive)

    # -- a person's pause ----------------------------------------------------------------------

    def hold(self, target: str, reason: str) -> bool:
        """Pause ``target``: its jobs start no step but the moves to done/ and failed/ until
        :meth:`release`. A step under way finishes first. False if it was paused already."""
        with self._wake:
            if target in self._held:
                return False
            self._held[target] = set()
        self.events.emit(TargetHeld(target, reason))
        return True

    def release(self, target: str) -> bool:
        """Resume a target paused by :meth:`hold`; False if it was not paused."""
        with self._wake:
            if self._held.pop(target, None) is None:
                return False
            self._wake.notify_all()
        self.events.emit(TargetReleased(target))
        return True

    def _holds(self, job: Job) -> bool:
        return job.target in self._held and job.state not in MOVE_STATES

    def in_flight_count(self) -> int:
        with self._wake:
            return len(self._in_flight)

    def idle(self) -> bool:
        """No unfinished job is left (in flight or waiting)."""
        with self._wake:
            return not self._in_flight and self.journal.unfinished_count() == 0

    def _claim(self, number: int) -> Job | None:
        """The next ready job for this worker, or None when the runner stops.

        The id is claimed under ``_wake`` (counted in flight, so no two workers hold the same job);
        the row is read after, outside the lock, so other workers need not wait for that read.
        One id per query: claiming several (the rest queued in memory) gains nothing with small
        files (bench/RESULTS.md), so the simpler claim stays.
        """
        with self._wake:
            job_id = self._next_ready_id(number)
        if job_id is None:
            return None
        try:
            return self.journal.get(job_id)
        except Exception:
            self._release(job_id, finished=False)  # back to the journal for another try
            raise

    def _next_ready_id(self, number: int) -> int | None:
        """Under ``_wake``: claim the oldest ready id, or wait for a retry time or a poke; None when this
        worker is to leave (the runner stops, or a reload left fewer workers)."""
        while not self._stopping.is_set() and number < self.settings.workers:
            busy = self._in_flight.union(*self._held.values()) if self._held else self._in_flight
            woken = self._woken - busy
            if woken:
                job_id = min(woken)
                self._woken.discard(job_id)
                self._in_flight.add(job_id)
                return job_id
            now = self._clock()
            ids = self.journal.ready_ids(now, 1, busy)
            if ids:
                self._in_flight.add(ids[0])
                return ids[0]
            wakeup = self.journal.next_wakeup(busy)
            timeout = 1.0 if wakeup is None else min(max(wakeup - now, 0.01), 1.0)
            self._wake.wait(timeout)
        return None

    def _release(self, job_id: int, finished: bool, target: str | None = None) -> None:
        with self._wake:
            self._in_flight.discard(job_id)
            self._woken.discard(job_id)
            held = self._held.get(target) if target is not None and not finished else None
            if held is not None:
                held.add(job_id)  # set aside until its target is released; nobody needs waking
            elif finished:
                self._tools.scratch.pop(job_id, None)
                for parked in self._parked.values():  # a handful of targets at most
                    parked.discard(job_id)
            else:
                # It waits for a retry time that sleeping workers did not know about: one of them
                # recomputes its wake-up. A finished job brings no new work, so nobody is woken.
                self._wake.notify()

    def _work(self, number: int) -> None:
        beat = self.liveness.heartbeat(threading.current_thread().name)
        try:
            while not self._stopping.is_set():
                try:
                    job = self._claim(number)
                except Exception:  # the journal could not be read (disk trouble): keep the worker alive
                    log.exception("worker could not read the journal")
                    self._stopping.wait(1.0)
                    continue
                if job is None:
                    return
                with beat.busy():
                    self._work_on(job)
        finally:
            self.liveness.retire(beat)

    def _work_on(self, job: Job) -> None:
        finished = handed_over = False
        try:
            driven = self.drive(job)
            handed_over = driven is None
            finished = driven is not None and driven.finished
        except LeaseLost as lost:
            self._drop(job.id, lost)
            finished = True  # forget its memory-only scratch: a later claim starts from the journal
        except Exception:  # a bug must not kill the worker; the job is retried later
            log.exception("worker error", job=job.id)
            self._postpone_after_bug(job)
        finally:
            if not handed_over:  # a job whose link was handed over is released by whoever delivers it
                self._release(job.id, finished, job.target)

    def _postpone_after_bug(self, job: Job) -> None:
        try:
            # Re-read: drive() may have committed later steps before it raised, and the job
            # must never be put back to an earlier step than the journal holds.
            current = self.journal.get(job.id)
            if current.finished:
                return
            self.journal.record(current.id, StepRecord(
                state=current.state, attempts=current.attempts,
                next_attempt_at=self._clock() + self.policy.max_backoff,
                last_error={"step": current.state.value, "reason": "internal error (see log)"},
            ))
        except Exception:
            log.exception("could not postpone job", job=job.id)

    # -- driving one job -----------------------------------------------------------------------

    def drive(self, job: Job) -> Job | None:
        """Run steps of ``job`` until it finishes, must wait, or the daemon stops; None when its link
        was handed to the worker serving its record (:mod:`hotfolder.linking`), which delivers it."""
        while not job.finished and not self._stopping.is_set():
            if self._held and self._holds(job):
                break  # its target was paused by a person: the job waits, set aside, for the release
            # Before each side effect (raises LeaseLost); a file leaves the inbox only once the journal itself
            # confirms the lease (while a shared journal is unreachable, nothing moves).
            self.journal.check_lease(job.id, confirm=job.state in (State.TO_DONE, State.TO_FAILED))
            started = time.monotonic()
            self.events.emit(StepStarted(job.state, job))
            with metering(Meter(job.size, self._bytes_sent_reporter(job))):
                result = self._run_step(job)
            if result is None:
                return None
            job, decision = self._conclude(job, result, started)
            if decision.delay > 0:
                break
        return job

    def _conclude(self, job: Job, result: StepResult, started: float) -> tuple[Job, Decision]:
        """Decide what the step's result means, commit it, and say so."""
        step = job.state
        decision = decide(step, job.attempts, result.outcome, self.policy, self._jitter())
        job = self._commit(job, result, decision)
        progress()
        self._note_setback(job, result.outcome.kind is OutcomeKind.TRANSIENT and not job.finished)
        self._tell(step, job, result, decision, time.monotonic() - started)
        return job, decision

    def _deliver_link(self, job_id: int, answer: Answer, since: float) -> None:
        """A parked job's link answer (from the thread that linked it): commit it and give the job
        back to the pool; with no answer, back to the pool as it stands, to link again."""
        finished = False
        try:
            if isinstance(answer, LeaseLost):
                raise answer
            if answer is not None:
                job = self.journal.get(job_id)
                result = (StepResult(answer.outcome, ids=answer.ids) if isinstance(answer, StepError)
                          else StepResult(Outcome.success(), ids=answer))
                job, _ = self._conclude(job, result, since)
                finished = job.finished
        except LeaseLost as lost:
            self._drop(job_id, lost)
            finished = True
        except Exception:
            log.exception("could not record a link", job=job_id)
        finally:
            self._release(job_id, finished)

    def _drop(self, job_id: int, lost: LeaseLost) -> None:
        # Another daemon sharing the journal may hold the job now: nothing more is done with it here
        # (no side effect, no write); whoever holds it resumes at its last committed step.
        log.warning("job dropped: this node no longer holds it", job=job_id, reason=str(lost))

    def _commit(self, job: Job, result: StepResult, decision: Decision) -> Job:
        step = job.state
        record = StepRecord(
            state=decision.state,
            attempts=decision.attempts,
            next_attempt_at=self._clock() + decision.delay if decision.delay > 0 else 0.0,
            vendor_update=redact_value(dict(result.ids)) if result.ids else None,
            vendor_replace=redact_value(dict(result.vendor_replace)) if result.vendor_replace is not None else None,
            extra_vendor_removals=result.vendor_removals,
            outcome_path=result.outcome_path or None,
            clear_outcome_path=result.outcome_path == "",
        )
        if result.digests is not None:
            record.digests = result.digests.as_dict()
            record.size = result.digests.identity.size
            record.mtime_ns = result.digests.identity.mtime_ns
        if decision.error is not None:
            record.last_error = {
                "step": step.value,
                "reason": redact(decision.error),
                "status": decision.status,
                "at": self._clock(),
            }
        elif decision.state is State.TO_DONE:
            record.clear_error = True  # earlier setbacks were overcome; the job succeeded
        if decision.state is State.TO_DONE and job.outcome_path is None and record.outcome_path is None:
            # The destination goes into the same commit as the link's result: it is durable before
            # the move (crash rule 5) without a commit of its own.
            record.outcome_path = plan_destination(job, self.settings.done, self._tools.source(job))
        return self.journal.record(job.id, record)

    def _bytes_sent_reporter(self, job: Job) -> Callable[[int, int], None]:
        def report(sent: int, total: int) -> None:
            self.events.emit(BytesSent(job, sent, total))

        return report

    def _tell(self, step: State, job: Job, result: StepResult, decision: Decision, duration: float) -> None:
        """Say what the step did (after its commit): the log, and any other subscriber, listen."""
        emit = self.events.emit
        emit(StepEnded(step, job, result.outcome, decision, duration, result.bytes, result.ids))
        status = result.outcome.status
        if status in RATE_LIMIT_STATUSES and result.outcome.retry_after:
            emit(TargetPaused(job.target, result.outcome.retry_after, result.outcome.reason))
        if decision.state is State.FAILED:
            emit(FileFailed(job))
        elif decision.state is State.DONE:
            emit(FileDone(job, self._clock() - job.created_at))

    def _note_setback(self, job: Job, setback: bool) -> None:
        held = self._setback.get(job.target)
        if not setback and (held is None or job.id not in held):
            return  # the common case: nothing to note, no lock taken
        with self._wake:
            if setback:
                self._setback.setdefault(job.target, set()).add(job.id)
            elif held is not None:
                held.discard(job.id)

    def _run_step(self, job: Job) -> StepResult | None:
        try:
            return self._steps[job.state](job)
        except TargetUnavailable as error:
            with self._wake:
                self._parked.setdefault(error.target, set()).add(job.id)
            return StepResult(error.outcome, ids=error.ids)
        except StepError as error:
            return StepResult(error.outcome, ids=error.ids)
        except LinkParked:
            return None


def _policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(settings.retry.attempts, settings.retry.backoff, settings.retry.max_backoff)



