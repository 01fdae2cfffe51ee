"""Leaving the inbox: the moves to done/ and failed/, and the notes beside the files.

A file goes to ``done/`` only if its bytes are the ones the vendor received: the move checks the
file against what was hashed (size, mtime, ctime, inode, through an open), waits out a network
mount's attribute cache that no open can bypass, and across filesystems proves the copy against
the SHA-256 that was sent before the original is unlinked. A file whose bytes changed after they
were sent is sent again (:mod:`hotfolder.resend`). Every destination is planned and journalled
before the file moves (crash rule 5 in :mod:`hotfolder.journal`), so an interrupted move is
finished, not repeated. Beside a failed file goes ``<name>.error.json`` with the reason; beside a
duplicate or a resent file, a note that says what happened.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from hotfolder import outcomes, resend
from hotfolder.errors import StepError
from hotfolder.groups import GroupFolders
from hotfolder.jobtools import JobTools, StepResult, printable
from hotfolder.journal import Job, StepRecord
from hotfolder.logsetup import redact_value
from hotfolder.pipeline import Outcome, OutcomeKind
from hotfolder.transfer import FileDigests, FileIdentity, hash_file, open_checked
from hotfolder.twins import same_content

log = structlog.get_logger("hotfolder.runner")

# Journal id: when the figures of a file on a cached network mount are fresh enough to compare.
CACHE_EXPIRES_AT = "cache_expires_at"


class Leaving:
    def __init__(self, tools: JobTools, groups: GroupFolders, *, cache_lag: float = 0.0,
                 on_file_left_inbox: Callable[[Path], None] | None = None) -> None:
        self._tools = tools
        self._groups = groups
        # The inbox mount's attribute cache, when opening a file cannot bypass it (sshfs): before a
        # file leaves the mount, its figures must have been fetched after its bytes were read.
        self._cache_lag = cache_lag
        self._on_file_left_inbox = on_file_left_inbox

    def to_done(self, job: Job) -> StepResult:
        return self._move(job, self._tools.settings.done, sidecar=False)

    def to_failed(self, job: Job) -> StepResult:
        return self._move(job, self._tools.settings.failed, sidecar=True)

    def _move(self, job: Job, root: Path, *, sidecar: bool) -> StepResult:
        source = self._tools.source(job)
        planned = Path(job.outcome_path) if job.outcome_path else None
        refreshed: FileDigests | None = None  # the file's identity now, when only its times changed
        try:
            if planned is None:
                if not source.exists() and not source.is_symlink():
                    # Attached (or failed) but the file itself was taken away meanwhile: nothing to move.
                    return StepResult(Outcome.success())
                # Not planned with the previous step (refused and failed files, a folder that could
                # not be read then).
                planned = free_destination(job, root)
                # Journal first: the destination is durable before the file moves (crash rule 5).
                self._tools.journal.record(job.id, StepRecord(
                    state=job.state, attempts=job.attempts, outcome_path=str(planned),
                ))
                final = outcomes.move_file(source, planned)
            elif outcomes.finish_interrupted_move(source, planned, job.size):
                final = planned
            elif source.exists():
                sha256 = None
                if root == self._tools.settings.done:
                    waiting = self._cache_not_expired(job)
                    if waiting is not None:
                        return waiting
                    verdict = self._still_as_sent(job, source)
                    if isinstance(verdict, StepResult):
                        return verdict
                    refreshed = verdict
                    sha256 = (job.digests or {}).get("sha256")
                final = outcomes.move_file(source, planned, sha256=sha256)
            else:
                # Taken away after its destination was planned: nothing moved, so none is recorded.
                return StepResult(Outcome.success(), outcome_path="")
            if sidecar:
                outcomes.write_sidecar(final, self._sidecar_info(job, final))
            elif resend.is_resend(job.vendor):
                outcomes.write_sidecar(final, self._resend_note(job, final), suffix=".resent.json")
            elif job.vendor.get("duplicate_of"):
                outcomes.write_sidecar(final, self._duplicate_note(job, final), suffix=".duplicate.json")
            self._groups.move_manifest_if_last(job, source.parent, final.parent)
        except outcomes.CopyDiffers as error:
            return self._resend(job, str(error.strerror))
        except OSError as error:
            reason = f"cannot move {printable(str(source))} to {root}: {error.strerror or error}"
            return StepResult(Outcome(OutcomeKind.TRANSIENT, reason))
        if self._on_file_left_inbox is not None:
            self._on_file_left_inbox(source)
        removals = (CACHE_EXPIRES_AT,) if CACHE_EXPIRES_AT in job.vendor else ()
        return StepResult(Outcome.success(), outcome_path=str(final), digests=refreshed, vendor_removals=removals)

    def _cache_not_expired(self, job: Job) -> StepResult | None:
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
        wait = float(expires) - self._tools.clock()
        if wait <= 0:
            return None
        reason = f"{printable(job.name)}: waiting {wait:.1f}s for the network mount's attribute cache to expire"
        return StepResult(Outcome(OutcomeKind.PENDING, reason, retry_after=wait), ids={CACHE_EXPIRES_AT: expires})

    def _still_as_sent(self, job: Job, source: Path) -> StepResult | FileDigests | None:
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
        if job.digests and same_content(now.as_dict(), job.digests):
            log.info("file's times changed after it was sent, its bytes did not", job=job.id, file=job.name,
                     change=why)
            return now
        return self._resend(job, why)

    def _resend(self, job: Job, why: str) -> StepResult:
        """The vendor holds an earlier version: set its ids aside as stale and start again at hash."""
        ids = resend.ids_for_resend(job.vendor)
        stale = resend.described(job.vendor)
        if ids is None:
            reason = (f"changed after its bytes were sent ({why}), and it had been sent {resend.MAX_RESENDS + 1} "
                      f"times; the vendor holds an earlier version ({stale}); `hotfolder retry` sends it again")
            return StepResult(Outcome(OutcomeKind.CHANGED_TOO_OFTEN, reason), outcome_path="")
        log.warning("file changed after it was sent; sending the new bytes to replace the earlier copy",
                    job=job.id, target=job.target, record=job.record, file=job.name, change=why, stale=stale)
        reason = f"changed after its bytes were sent ({why}); sending the new bytes to replace {stale}"
        # The done/ destination planned with the link no longer applies: the new send plans its own.
        return StepResult(Outcome(OutcomeKind.FILE_CHANGED, reason), vendor_replace=ids, outcome_path="")

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
            "failed_at": _iso(error.get("at") or self._tools.clock()),
            "moved_to": printable(str(final)),
        })


def free_destination(job: Job, root: Path) -> Path:
    """The same place below ``root`` as below the inbox (refused files included), under a free name."""
    wanted = root / job.relpath
    return outcomes.free_name(wanted.parent, wanted.name)


def plan_destination(job: Job, root: Path, source: Path) -> str | None:
    """Where ``job``'s file will go below ``root``: the same place as below the inbox, under a free
    name. None if the file is no longer there (nothing will move) or the folder cannot be read."""
    try:
        if not source.exists() and not source.is_symlink():
            return None
        return str(free_destination(job, root))
    except OSError:
        return None  # the move step plans again, and says why if it still cannot


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
