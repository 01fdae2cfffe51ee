"""How a job travels: one handler per step, in the order a file meets them, and the table that names them.

    hash ─► presign ─► upload ─► finalize ─► link ─► to_done          (or ─► to_failed)

Each handler reads the job, makes at most one side effect and returns what happened; it never
decides what comes next (``pipeline.decide`` does) and never commits (the runner does, before the
next side effect). The vendor's four verbs do the talking; what is not the vendor's lives beside:
twins before presign (:mod:`hotfolder.twins`), group folders at the link (:mod:`hotfolder.groups`),
the moves out of the inbox (:mod:`hotfolder.leaving`), a resend's stale link (:mod:`hotfolder.resend`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hotfolder import resend
from hotfolder.groups import GroupFolders
from hotfolder.jobtools import JobTools, StepResult, printable
from hotfolder.journal import Job
from hotfolder.leaving import Leaving
from hotfolder.linking import Deliver, LinkCombiner
from hotfolder.pipeline import Outcome, OutcomeKind, State
from hotfolder.transfer import hash_file
from hotfolder.twins import Duplicate, WaitForTwin, find_twin
from hotfolder.watch.formats import check_complete
from hotfolder.watch.tracker import incomplete_for_too_long
from hotfolder.watch.writers import WRITER_OPEN, LeaseUnsupported, has_writer

INCOMPLETE_SINCE = "incomplete_since"  # journal id: when the hash step first found the file's end missing

Handler = Callable[[Job], StepResult]


class Steps:
    def __init__(self, tools: JobTools, groups: GroupFolders, leaving: Leaving, *,
                 writers_checked: Callable[[], bool] = lambda: True, deliver_link: Deliver) -> None:
        self._tools = tools
        self._groups = groups
        self._leaving = leaving
        self._combiner = LinkCombiner(tools.link_lock, deliver_link)
        # False once the watcher has found that writers cannot be detected here.
        self._writers_checked = writers_checked

    def table(self) -> dict[State, Handler]:
        """Every active state's handler: the runner looks the job's state up here."""
        return {
            State.HASH: self.hash,
            State.PRESIGN: self.presign,
            State.UPLOAD: self.upload,
            State.FINALIZE: self.finalize,
            State.LINK: self.link,
            State.TO_DONE: self._leaving.to_done,
            State.TO_FAILED: self._leaving.to_failed,
        }

    def hash(self, job: Job) -> StepResult:
        """Hash the file in one read pass, once the readiness tests say it is finished.

        The watcher ran these tests before it handed the file over; they run again here
        because the hash step also runs after the file changed (a writer came back, or the file
        was rewritten after it was sent), when the watcher does not stand before it.
        """
        adapter = self._tools.adapter(job)
        source = self._tools.source(job)
        waiting = self._still_being_written(job, source)
        if waiting is not None:
            return waiting
        digests = hash_file(source, adapter.digests)
        removals = (INCOMPLETE_SINCE,) if INCOMPLETE_SINCE in job.vendor else ()
        return StepResult(Outcome.success(), digests=digests, bytes=digests.identity.size, vendor_removals=removals)

    def _still_being_written(self, job: Job, source: Path) -> StepResult | None:
        """None if ``source`` looks finished; else a wait (never a spent attempt), or a refusal once
        its end has been missing for ``watch.incomplete_timeout``."""
        watch = self._tools.settings.watch
        try:
            size = os.stat(source, follow_symlinks=False).st_size
            if watch.check_writers and self._writers_checked() and has_writer(source):
                return StepResult(Outcome(OutcomeKind.PENDING, f"{printable(job.name)}: {WRITER_OPEN}",
                                           retry_after=watch.settle))
            incomplete = check_complete(source, size) if watch.check_complete else None
        except (LeaseUnsupported, OSError):
            return None  # the hash step's own open says what is wrong with the file, if anything
        if incomplete is None:
            return None
        now = self._tools.clock()
        since = job.vendor.get(INCOMPLETE_SINCE)
        since = float(since) if isinstance(since, int | float) else now
        if now - since >= watch.incomplete_timeout:
            reason = incomplete_for_too_long(incomplete.reason, watch.incomplete_timeout)
            return StepResult(Outcome(OutcomeKind.PERMANENT, reason))
        return StepResult(Outcome(OutcomeKind.PENDING, incomplete.reason, retry_after=watch.settle),
                           ids={INCOMPLETE_SINCE: since})

    def presign(self, job: Job) -> StepResult:
        """Ask the vendor where to put the bytes, unless the same bytes are already on this record."""
        # A resend must replace its stale link, so it is sent even where a twin holds the same bytes.
        if self._tools.settings.duplicates == "skip" and job.group is None and not resend.is_resend(job.vendor):
            twin = self._twin(job)
            if twin is not None:
                return twin
        return StepResult(Outcome.success(), ids=self._tools.adapter(job).presign(self._tools.context(job)))

    def upload(self, job: Job) -> StepResult:
        adapter = self._tools.adapter(job)
        ctx = self._tools.context(job)
        with adapter.gate.upload_slot():
            ids = adapter.upload(ctx)
        return StepResult(Outcome.success(), ids=ids, bytes=job.size)

    def finalize(self, job: Job) -> StepResult:
        return StepResult(Outcome.success(), ids=self._tools.adapter(job).finalize(self._tools.context(job)))

    def link(self, job: Job) -> StepResult:
        """Attach the uploaded file to its record: never two links to one record at once. Where the
        vendor can link several files with one write, the link is handed over (raises LinkParked)."""
        adapter = self._tools.adapter(job)
        ctx = self._tools.context(job)
        key = adapter.link_key(ctx)
        if job.group is not None and adapter.manifest_name and not resend.is_resend(job.vendor):
            with self._tools.link_lock(key):
                ids = self._groups.link(job, adapter, ctx)
        elif adapter.combines_links(ctx):
            self._combiner.link(key, ctx, adapter)  # with the others waiting on this record
        else:
            with self._tools.link_lock(key):
                ids = adapter.link(ctx)
        return StepResult(Outcome.success(), ids=ids)

    def _twin(self, job: Job) -> StepResult | None:
        candidates = self._tools.journal.possible_twins(job.target, job.record, job.id, job.size, job.digests or {})
        verdict = find_twin(job, candidates)
        if isinstance(verdict, WaitForTwin):
            return StepResult(Outcome(OutcomeKind.PENDING, verdict.reason, retry_after=verdict.after))
        if isinstance(verdict, Duplicate):
            return StepResult(Outcome(OutcomeKind.DUPLICATE), ids={"duplicate_of": verdict.of,
                                                                  "duplicate_of_file": verdict.of_file})
        return None
