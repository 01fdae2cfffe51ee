"""The worker pool: takes ready jobs from the journal and runs them one step at a time.

For each step a worker reads the job, performs exactly one side effect (through the vendor
adapter, transfer or outcomes), asks ``pipeline.decide`` what that outcome means, and
commits the decision to the journal before it starts the next side effect. A job stays with
one worker while it moves forward without waiting, so the presigned URL it keeps in memory
is still there for the upload; a job that must wait (backoff) goes back to the journal,
from where any worker picks it up when its time comes.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
import yaml

from hotfolder import outcomes, resend
from hotfolder.config import Settings
from hotfolder.errors import StepError
from hotfolder.journal import Job, JournalBackend, NewJob, StepRecord
from hotfolder.layout import LayoutError, place, validate_segment
from hotfolder.logsetup import redact, redact_value
from hotfolder.mountcache import AttributeCache
from hotfolder.pipeline import (
    Decision,
    Outcome,
    OutcomeKind,
    RetryPolicy,
    State,
    decide,
)
from hotfolder.readiness import WRITER_OPEN, LeaseUnsupported, check_complete, has_writer
from hotfolder.transfer import FileDigests, FileIdentity, hash_file, open_checked
from hotfolder.vendors.base import StepContext, Vendor
from hotfolder.watcher import is_ignored

log = structlog.get_logger("hotfolder.runner")
INCOMPLETE_SINCE = "incomplete_since"  # journal id: when the hash step first found the file's end missing
# Journal id: when the figures of a file on a cached network mount are fresh enough to compare.
CACHE_EXPIRES_AT = "cache_expires_at"
_debug_log = logging.getLogger("hotfolder.runner")  # the stdlib logger behind ``log``: its level check is cheap


@dataclass
class _StepResult:
    outcome: Outcome
    ids: Mapping[str, Any] = field(default_factory=dict)
    digests: FileDigests | None = None
    outcome_path: str | None = None  # where the file went; "" when it left the inbox by other hands
    bytes: int = 0
    vendor_replace: Mapping[str, Any] | None = None  # every vendor id at once (a resend)
    vendor_removals: tuple[str, ...] = ()


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
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.adapters = adapters
        self.policy = RetryPolicy(settings.retry.attempts, settings.retry.backoff, settings.retry.max_backoff)
        self._clock = clock
        self._jitter = jitter
        self._on_file_left_inbox = on_file_left_inbox
        # False once the watcher's readiness gate has found that writers cannot be detected here.
        self._writers_checked = writers_checked
        # The inbox mount's attribute cache, when opening a file cannot bypass it (sshfs): before a
        # file leaves the mount, its figures must have been fetched after its bytes were read.
        self._cache_lag = cache.settle_lag if cache is not None else 0.0
        self._wake = threading.Condition()
        self._in_flight: set[int] = set()  # claimed by a worker
        self._scratch: dict[int, dict[str, Any]] = {}  # per job, memory only (presigned URLs)
        self._link_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._link_locks_guard = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

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
            self.poke()  # before the log lines: logging a large batch would hold back the workers' first claims
        for job in added:
            if job.state is State.TO_FAILED:
                log.warning("file refused; moving it to failed/", job=job.id, file=printable(job.relpath),
                            reason=(job.last_error or {}).get("reason"))
            else:
                log.info("file queued", job=job.id, target=job.target, record=job.record, file=job.name,
                         bytes=job.size)
        return added

    def submit_incomplete(self, path: Path, stat: os.stat_result, reason: str) -> Job | None:
        """A file that stayed incomplete past ``watch.incomplete_timeout``: to failed/ with the reason."""
        new = self._new_job(path, stat, refusal=reason)
        added = self.journal.add_jobs([new]) if new is not None else []
        if added:
            self.poke()
            log.warning("file incomplete; moving it to failed/", job=added[0].id, file=printable(added[0].relpath),
                        reason=reason)
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
            relpath=placement.relpath.as_posix(), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
        )

    def poke(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # -- the pool ------------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.poke()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def idle(self) -> bool:
        """No unfinished job is left (in flight or waiting)."""
        with self._wake:
            return not self._in_flight and self.journal.unfinished_count() == 0

    def _claim(self) -> Job | None:
        """The next ready job for this worker, or None when the runner stops.

        The id is claimed under ``_wake`` (counted in flight, so no two workers hold the same job);
        the row is read after, outside the lock, so other workers need not wait for that read.
        Claiming several ids per query (the rest queued in memory) was tried and measured: no gain
        with small files (bench/small_files.py), so the simpler one-at-a-time claim stays.
        """
        with self._wake:
            job_id = self._next_ready_id()
        if job_id is None:
            return None
        try:
            return self.journal.get(job_id)
        except Exception:
            self._release(job_id, finished=False)  # back to the journal for another try
            raise

    def _next_ready_id(self) -> int | None:
        """Under ``_wake``: claim the oldest ready id, or wait for a retry time or a poke."""
        while not self._stopping.is_set():
            now = self._clock()
            ids = self.journal.ready_ids(now, 1, self._in_flight)
            if ids:
                self._in_flight.add(ids[0])
                return ids[0]
            wakeup = self.journal.next_wakeup(self._in_flight)
            timeout = 1.0 if wakeup is None else min(max(wakeup - now, 0.01), 1.0)
            self._wake.wait(timeout)
        return None

    def _release(self, job_id: int, finished: bool) -> None:
        with self._wake:
            self._in_flight.discard(job_id)
            if finished:
                self._scratch.pop(job_id, None)
            else:
                # It waits for a retry time that sleeping workers did not know about: one of them
                # recomputes its wake-up. A finished job brings no new work, so nobody is woken.
                self._wake.notify()

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._claim()
            except Exception:  # the journal could not be read (disk trouble): keep the worker alive
                log.exception("worker could not read the journal")
                self._stopping.wait(1.0)
                continue
            if job is None:
                return
            finished = False
            try:
                job = self.drive(job)
                finished = job.finished
            except Exception:  # a bug must not kill the worker; the job is retried later
                log.exception("worker error", job=job.id)
                self._postpone_after_bug(job)
            finally:
                self._release(job.id, finished)

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

    def drive(self, job: Job) -> Job:
        """Run steps of ``job`` until it finishes, must wait, or the daemon stops."""
        while not job.finished and not self._stopping.is_set():
            started = time.monotonic()
            step = job.state
            result = self._run_step(job)
            decision = decide(job.state, job.attempts, result.outcome, self.policy, self._jitter())
            job = self._commit(job, result, decision)
            self._log_step(step, job, result, decision, time.monotonic() - started)
            if decision.delay > 0:
                break
        return job

    def _commit(self, job: Job, result: _StepResult, decision: Decision) -> Job:
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
            record.outcome_path = self._plan_destination(job, self.settings.done)
        return self.journal.record(job.id, record)

    def _plan_destination(self, job: Job, root: Path) -> str | None:
        """Where ``job``'s file will go below ``root``: the same place as below the inbox, under a free
        name. None if the file is no longer there (nothing will move) or the folder cannot be read."""
        source = self._source(job)
        try:
            if not source.exists() and not source.is_symlink():
                return None
            return str(self._free_destination(job, root))
        except OSError:
            return None  # the move step plans again, and says why if it still cannot

    @staticmethod
    def _free_destination(job: Job, root: Path) -> Path:
        """The same place below ``root`` as below the inbox (refused files included), under a free name."""
        wanted = root / job.relpath
        return outcomes.free_name(wanted.parent, wanted.name)

    def _log_step(self, step: State, job: Job, result: _StepResult, decision: Decision, duration: float) -> None:
        quiet = result.outcome.kind is OutcomeKind.SUCCESS and not _debug_log.isEnabledFor(logging.DEBUG)
        if quiet and decision.state is not State.DONE:
            return  # nothing to say at info; skipping the fields saves CPU on every step
        fields: dict[str, Any] = {
            "job": job.id, "target": job.target, "record": job.record, "file": job.name, "step": step.value,
            "outcome": result.outcome.kind.value, "next": decision.state.value,
            "duration": round(duration, 4), "attempts": decision.attempts,
        }
        if result.bytes:
            fields["bytes"] = result.bytes
        if result.ids:
            fields["ids"] = dict(result.ids)  # vendor ids are not secrets; they make a run traceable
        if decision.delay > 0:
            fields["retry_in"] = round(decision.delay, 2)
        kind = result.outcome.kind
        if kind is OutcomeKind.SUCCESS:
            # Debug: a healthy file is told at info by two lines, "file queued" and "file done" (with
            # every vendor id); seven lines per file cost more CPU than the journal with small files.
            log.debug("step done", **fields)
        elif kind is OutcomeKind.PENDING:
            log.debug("waiting", reason=result.outcome.reason, **fields)  # not a failure; may repeat often
        elif kind is OutcomeKind.DUPLICATE:
            log.info("same bytes already attached to this record; not sent again", **fields)
        elif decision.state is State.GONE:
            log.warning("file vanished from the inbox; job closed", reason=result.outcome.reason, **fields)
        else:
            log.warning("step failed", reason=redact(result.outcome.reason), status=result.outcome.status, **fields)
        if decision.state is State.FAILED:
            log.error("file failed", job=job.id, file=job.name, moved_to=job.outcome_path,
                      reason=(job.last_error or {}).get("reason"))
        elif decision.state is State.DONE:
            log.info("file done", job=job.id, target=job.target, record=job.record, file=job.name, bytes=job.size,
                     ids=dict(job.vendor), took=round(self._clock() - job.created_at, 3), moved_to=job.outcome_path)

    def _run_step(self, job: Job) -> _StepResult:
        try:
            return self._perform(job)
        except StepError as error:
            return _StepResult(error.outcome, ids=error.ids)

    def _perform(self, job: Job) -> _StepResult:
        state = job.state
        if state is State.HASH:
            return self._hash(job)
        if state is State.TO_DONE:
            return self._move(job, self.settings.done, sidecar=False)
        if state is State.TO_FAILED:
            return self._move(job, self.settings.failed, sidecar=True)

        adapter = self._adapter(job)
        # A resend must replace its stale link, so it is sent even where a twin holds the same bytes.
        resending = resend.is_resend(job.vendor)
        if state is State.PRESIGN and self.settings.duplicates == "skip" and job.group is None and not resending:
            twin = self._check_duplicate(job)
            if twin is not None:
                return twin
        ctx = self._context(job)
        if state is State.PRESIGN:
            ids = adapter.presign(ctx)
        elif state is State.UPLOAD:
            with adapter.gate.upload_slot():
                ids = adapter.upload(ctx)
            return _StepResult(Outcome.success(), ids=ids, bytes=job.size)
        elif state is State.FINALIZE:
            ids = adapter.finalize(ctx)
        elif state is State.LINK:
            with self._link_lock(adapter.link_key(ctx)):
                if job.group is not None and adapter.manifest_name and not resending:
                    ids = self._link_group(job, adapter, ctx)
                else:
                    ids = adapter.link(ctx)
        else:  # pragma: no cover - decide() never hands out other states
            raise AssertionError(state)
        return _StepResult(Outcome.success(), ids=ids)

    def _hash(self, job: Job) -> _StepResult:
        """Hash the file in one read pass, once it is finished by the gate's own tests.

        The watcher's gate tested the file before it was handed over; these tests run again here
        because the hash step also runs after the file changed (a writer came back, or the file
        was rewritten after it was sent), when no gate stands before it.
        """
        adapter = self._adapter(job)
        source = self._source(job)
        waiting = self._still_being_written(job, source)
        if waiting is not None:
            return waiting
        digests = hash_file(source, adapter.digests)
        removals = (INCOMPLETE_SINCE,) if INCOMPLETE_SINCE in job.vendor else ()
        return _StepResult(Outcome.success(), digests=digests, bytes=digests.identity.size, vendor_removals=removals)

    def _still_being_written(self, job: Job, source: Path) -> _StepResult | None:
        """None if ``source`` looks finished; else a wait (never a spent attempt), or a refusal once
        its end has been missing for ``watch.incomplete_timeout``."""
        watch = self.settings.watch
        try:
            size = os.stat(source, follow_symlinks=False).st_size
            if watch.check_writers and self._writers_checked() and has_writer(source):
                return _StepResult(Outcome(OutcomeKind.PENDING, f"{printable(job.name)}: {WRITER_OPEN}",
                                           retry_after=watch.settle))
            incomplete = check_complete(source, size) if watch.check_complete else None
        except (LeaseUnsupported, OSError):
            return None  # the hash step's own open says what is wrong with the file, if anything
        if incomplete is None:
            return None
        now = self._clock()
        since = job.vendor.get(INCOMPLETE_SINCE)
        since = float(since) if isinstance(since, int | float) else now
        if now - since >= watch.incomplete_timeout:
            limit = watch.incomplete_timeout
            reason = f"{incomplete.reason} (still incomplete after {limit:g}s, watch.incomplete_timeout)"
            return _StepResult(Outcome(OutcomeKind.PERMANENT, reason))
        return _StepResult(Outcome(OutcomeKind.PENDING, incomplete.reason, retry_after=watch.settle),
                           ids={INCOMPLETE_SINCE: since})

    def _check_duplicate(self, job: Job) -> _StepResult | None:
        """The same bytes already attached to (or on their way to) this record are not sent again.

        Checked before presign, when every twin's digests are durable, so two copies dropped at
        once cannot both miss each other: the older job goes on, the younger waits for it. If the
        twin ends in done/ this file follows it there as a duplicate; if it fails, this one is sent.
        """
        mine = job.digests or {}
        for other in self.journal.possible_twins(job.target, job.record, job.id, job.size, mine):
            if other.digests is None:
                if other.id < job.id and other.size == job.size:
                    # An older file of the same size is not hashed yet: it may be our twin and it
                    # goes first, so wait until its digests are known.
                    reason = f"waiting for job {other.id} ({other.name}, same size) to be hashed"
                    return _StepResult(Outcome(OutcomeKind.PENDING, reason, retry_after=0.5))
                continue
            if not _same_content(mine, other.digests):
                continue
            if other.state in (State.DONE, State.TO_DONE):
                return _StepResult(
                    Outcome(OutcomeKind.DUPLICATE),
                    ids={"duplicate_of": other.id, "duplicate_of_file": other.outcome_path or other.relpath},
                )
            if other.id < job.id:
                reason = f"waiting for job {other.id} with the same bytes ({other.name})"
                return _StepResult(Outcome(OutcomeKind.PENDING, reason, retry_after=1.0))
        return None

    def _adapter(self, job: Job) -> Vendor:
        adapter = self.adapters.get(job.target)
        if adapter is None:
            # The target was removed from the config while a job for it was unfinished.
            raise StepError(OutcomeKind.PERMANENT, f"target '{job.target}' is no longer configured")
        return adapter

    def _source(self, job: Job) -> Path:
        return self.settings.inbox / job.relpath

    def _context(self, job: Job) -> StepContext:
        # Checked again here, not only in layout.place: a journal row may not have come from place()
        # (hand-edited, older version), and percent-encoding cannot neutralise "." or "..", which
        # HTTP clients resolve as dot segments ("/reports/.." becomes "/").
        try:
            for segment, what in ((job.record, "record id"), (job.group, "folder"), (job.name, "file name")):
                if segment is not None:
                    validate_segment(segment, what)
        except LayoutError as error:
            raise StepError(OutcomeKind.PERMANENT, error.reason) from None
        digests = FileDigests.from_dict(job.digests) if job.digests else None
        return StepContext(
            job_id=job.id, target=job.target, record=job.record, group=job.group, name=job.name,
            path=self._source(job), identity=digests.identity if digests else FileIdentity(job.size, job.mtime_ns),
            digests=digests,
            ids=job.vendor, scratch=self._scratch.setdefault(job.id, {}),
            remember=lambda ids: self.journal.add_vendor_ids([job.id], redact_value(dict(ids))),
        )

    # -- group folders (one vendor record for a whole folder, e.g. a Visibuild ticket) ------------

    def _link_group(self, job: Job, adapter: Vendor, ctx: StepContext) -> Mapping[str, Any]:
        """Link a group folder once, when its manifest is there and every file is uploaded.

        Runs under the folder's link lock. The first member to find the folder complete links all
        members at once and copies the answer to each of them; the others find it and succeed.
        A refusal is copied too, so the folder's files go to failed/ together.
        """
        members = self.journal.group_jobs(job.target, job.record, job.group or "")
        for member in members:
            if member.vendor.get("group_failed"):
                raise StepError(OutcomeKind.PERMANENT, str(member.vendor["group_failed"]))
            if member.vendor.get("group_linked"):
                return {key: member.vendor[key] for key in member.vendor if key.startswith(("group_", "ticket_"))}
        failed = [m for m in members if m.state in (State.TO_FAILED, State.FAILED)]
        if failed:
            reason = f"another file of this folder failed: {failed[0].name}"
            self.journal.add_vendor_ids([m.id for m in members], {"group_failed": reason})
            raise StepError(OutcomeKind.PERMANENT, reason)
        active = [m for m in members if not m.finished]
        folder = self._source(job).parent
        manifest_path = folder / (adapter.manifest_name or "")
        waiting = self._group_waiting_for(folder, manifest_path, active)
        if waiting:
            raise StepError(OutcomeKind.PENDING, waiting, retry_after=max(self.settings.watch.settle, 1.0))
        manifest = self._read_manifest(manifest_path)
        member_ctxs = [ctx if m.id == job.id else self._context(m) for m in active]
        ctx.remember = lambda ids: self.journal.add_vendor_ids([m.id for m in active], redact_value(dict(ids)))
        try:
            ids = dict(adapter.link_group(ctx, member_ctxs, manifest))
        except StepError as error:
            if error.kind is OutcomeKind.PERMANENT:
                self.journal.add_vendor_ids([m.id for m in active], {"group_failed": error.outcome.reason})
            raise
        ids["group_linked"] = True
        self.journal.add_vendor_ids([m.id for m in active], redact_value(ids))
        return ids

    def _group_waiting_for(self, folder: Path, manifest_path: Path, active: list[Job]) -> str | None:
        """What the folder still lacks before it can be linked, in words; None when complete."""
        if not manifest_path.is_file() or manifest_path.is_symlink():
            return f"waiting for {manifest_path.name} in {folder.name}/"
        names = set()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name == manifest_path.name or not entry.is_file(follow_symlinks=False):
                    continue
                if is_ignored(PurePosixPath(entry.name), self.settings.watch.ignore):
                    continue
                names.add(entry.name)
        by_name = {m.name: m for m in active}
        unseen = names - set(by_name)
        if unseen:
            return f"waiting for {len(unseen)} file(s) of {folder.name}/ to settle"
        uploading = [m for m in active if m.state is not State.LINK]
        if uploading:
            return f"waiting for {len(uploading)} file(s) of {folder.name}/ to upload"
        return None

    @staticmethod
    def _read_manifest(path: Path) -> Mapping[str, Any]:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise StepError(OutcomeKind.PERMANENT, f"{path.name}: cannot be read as YAML: {error}") from error
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise StepError(OutcomeKind.PERMANENT, f"{path.name}: expected a mapping of ticket fields")
        return data

    def _link_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._link_locks_guard:
            return self._link_locks.setdefault(key, threading.Lock())

    # -- outcome moves -------------------------------------------------------------------------

    def _move(self, job: Job, root: Path, *, sidecar: bool) -> _StepResult:
        source = self._source(job)
        planned = Path(job.outcome_path) if job.outcome_path else None
        refreshed: FileDigests | None = None  # the file's identity now, when only its times changed
        try:
            if planned is None:
                if not source.exists() and not source.is_symlink():
                    # Attached (or failed) but the file itself was taken away meanwhile: nothing to move.
                    return _StepResult(Outcome.success())
                # Not planned with the previous step (refused and failed files, a folder that could
                # not be read then).
                planned = self._free_destination(job, root)
                # Journal first: the destination is durable before the file moves (crash rule 5).
                self.journal.record(job.id, StepRecord(
                    state=job.state, attempts=job.attempts, outcome_path=str(planned),
                ))
                final = outcomes.move_file(source, planned)
            elif outcomes.finish_interrupted_move(source, planned, job.size):
                final = planned
            elif source.exists():
                sha256 = None
                if root == self.settings.done:
                    waiting = self._cache_not_expired(job)
                    if waiting is not None:
                        return waiting
                    verdict = self._still_as_sent(job, source)
                    if isinstance(verdict, _StepResult):
                        return verdict
                    refreshed = verdict
                    sha256 = (job.digests or {}).get("sha256")
                final = outcomes.move_file(source, planned, sha256=sha256)
            else:
                # Taken away after its destination was planned: nothing moved, so none is recorded.
                return _StepResult(Outcome.success(), outcome_path="")
            if sidecar:
                outcomes.write_sidecar(final, self._sidecar_info(job, final))
            elif resend.is_resend(job.vendor):
                outcomes.write_sidecar(final, self._resend_note(job, final), suffix=".resent.json")
            elif job.vendor.get("duplicate_of"):
                outcomes.write_sidecar(final, self._duplicate_note(job, final), suffix=".duplicate.json")
            self._move_manifest_if_last(job, source.parent, final.parent)
        except outcomes.CopyDiffers as error:
            return self._resend(job, str(error.strerror))
        except OSError as error:
            reason = f"cannot move {printable(str(source))} to {root}: {error.strerror or error}"
            return _StepResult(Outcome(OutcomeKind.TRANSIENT, reason))
        if self._on_file_left_inbox is not None:
            self._on_file_left_inbox(source)
        removals = (CACHE_EXPIRES_AT,) if CACHE_EXPIRES_AT in job.vendor else ()
        return _StepResult(Outcome.success(), outcome_path=str(final), digests=refreshed, vendor_removals=removals)

    def _cache_not_expired(self, job: Job) -> _StepResult | None:
        """A wait (never a spent attempt) until the mount's attribute cache has expired since the
        file's bytes were last read; None when its figures can be trusted now.

        On sshfs a file that the server writes on after the upload read it still shows the old
        size and mtime, and the old bytes, until the cache expires: the move would copy that old
        view to done/ and delete the original while its writer goes on. The link's commit, the
        last step before this one, comes after the upload's read, so the cache counts from then.
        """
        if self._cache_lag <= 0:
            return None
        expires = job.vendor.get(CACHE_EXPIRES_AT)
        if not isinstance(expires, int | float):
            expires = job.updated_at + self._cache_lag
        wait = float(expires) - self._clock()
        if wait <= 0:
            return None
        reason = f"{printable(job.name)}: waiting {wait:.1f}s for the network mount's attribute cache to expire"
        return _StepResult(Outcome(OutcomeKind.PENDING, reason, retry_after=wait), ids={CACHE_EXPIRES_AT: expires})

    def _still_as_sent(self, job: Job, source: Path) -> _StepResult | FileDigests | None:
        """Is ``source`` still the file whose bytes were sent? None: yes. FileDigests: its times
        changed but its bytes did not (its identity now). A step result: it must be sent again."""
        digests = FileDigests.from_dict(job.digests) if job.digests else None
        sent = digests.identity if digests else FileIdentity(job.size, job.mtime_ns)
        try:
            # Through an open, not lstat: NFS (close-to-open) and SMB answer an open from the server.
            open_checked(source, sent).close()
            return None
        except StepError as error:
            if error.outcome.kind is OutcomeKind.FILE_GONE:
                return None  # the move itself finds it gone
            if error.outcome.kind is not OutcomeKind.FILE_CHANGED:
                raise OSError(errno.EIO, error.outcome.reason) from None
            why = error.outcome.reason
        algorithms = [name for name in ("sha256", "md5") if (job.digests or {}).get(name)]
        try:
            now = hash_file(source, algorithms)
        except StepError as error:
            if error.outcome.kind is OutcomeKind.FILE_GONE:
                return None
            return self._resend(job, why)  # still changing: the hash step waits for it to finish
        if job.digests and _same_content(now.as_dict(), job.digests):
            log.info("file's times changed after it was sent, its bytes did not", job=job.id, file=job.name,
                     change=why)
            return now
        return self._resend(job, why)

    def _resend(self, job: Job, why: str) -> _StepResult:
        """The vendor holds an earlier version: set its ids aside as stale and start again at hash."""
        ids = resend.ids_for_resend(job.vendor)
        stale = resend.described(job.vendor)
        if ids is None:
            reason = (f"changed after its bytes were sent ({why}), and it had been sent {resend.MAX_RESENDS + 1} "
                      f"times; the vendor holds an earlier version ({stale}); `hotfolder retry` sends it again")
            return _StepResult(Outcome(OutcomeKind.CHANGED_TOO_OFTEN, reason), outcome_path="")
        log.warning("file changed after it was sent; sending the new bytes to replace the earlier copy",
                    job=job.id, target=job.target, record=job.record, file=job.name, change=why, stale=stale)
        reason = f"changed after its bytes were sent ({why}); sending the new bytes to replace {stale}"
        # The done/ destination planned with the link no longer applies: the new send plans its own.
        return _StepResult(Outcome(OutcomeKind.FILE_CHANGED, reason), vendor_replace=ids, outcome_path="")

    def _move_manifest_if_last(self, job: Job, folder: Path, destination: Path) -> None:
        """The last file of a group folder to leave takes the manifest (ticket.yaml) with it."""
        adapter = self.adapters.get(job.target)
        if job.group is None or adapter is None or not adapter.manifest_name:
            return
        manifest = folder / adapter.manifest_name
        # The folder's lock: two last files leaving at once must not both take the manifest.
        with self._link_lock((job.target, job.record or "", job.group)):
            if not manifest.is_file() or manifest.is_symlink():
                return
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name == manifest.name or not entry.is_file(follow_symlinks=False):
                        continue
                    if not is_ignored(PurePosixPath(entry.name), self.settings.watch.ignore):
                        return  # another file of the folder is still here; it will take the manifest
            outcomes.move_file(manifest, outcomes.free_name(destination, manifest.name))

    def _duplicate_note(self, job: Job, final: Path) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "file": printable(job.name),
            "note": "the same bytes were already attached to this record; not uploaded again "
                    "(config: duplicates: skip)",
            "duplicate_of_job": job.vendor.get("duplicate_of"),
            "duplicate_of_file": printable(str(job.vendor.get("duplicate_of_file"))),
            "sha256": (job.digests or {}).get("sha256"),
            "md5": (job.digests or {}).get("md5"),
            "moved_to": printable(str(final)),
        }

    def _resend_note(self, job: Job, final: Path) -> dict[str, Any]:
        """Beside a file in done/ that was sent more than once: which earlier copies went stale, and
        whether the vendor's link now points at this one only."""
        current = {key: value for key, value in job.vendor.items() if key != resend.STALE}
        kept = current.get(resend.STALE_KEPT)
        if kept:
            note = (f"changed after it was sent; the new bytes were sent again, but {job.target} cannot take "
                    f"the earlier copy off its record: it still holds {', '.join(map(str, kept))}")
        else:
            note = "changed after it was sent; the new bytes were sent again and replaced the earlier copy"
        return redact_value({
            "job_id": job.id,
            "file": printable(job.name),
            "target": job.target,
            "record": job.record,
            "note": note,
            "stale": resend.stale_sends(job.vendor),
            "ids": current,
            "sha256": (job.digests or {}).get("sha256"),
            "md5": (job.digests or {}).get("md5"),
            "moved_to": printable(str(final)),
        })

    def _sidecar_info(self, job: Job, final: Path) -> dict[str, Any]:
        error = dict(job.last_error or {})
        return redact_value({
            "job_id": job.id,
            "file": printable(job.name),
            "target": job.target,
            "record": job.record,
            "step": error.get("step"),
            "reason": error.get("reason"),
            "http_status": error.get("status"),
            "attempts": job.attempts,
            "first_seen": _iso(job.created_at),
            "failed_at": _iso(error.get("at") or self._clock()),
            "moved_to": printable(str(final)),
        })


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _same_content(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal size and an equal digest of a kind both have (vendors hash with different algorithms)."""
    if a.get("size") != b.get("size"):
        return False
    shared = [name for name in ("sha256", "md5") if a.get(name) and b.get(name)]
    return bool(shared) and all(a[name] == b[name] for name in shared)


def printable(name: str) -> str:
    """A file name as text that can be written anywhere: bytes that were not UTF-8 become \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
