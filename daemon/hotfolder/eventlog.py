"""The log lines about files: one subscriber of the event stream (:mod:`hotfolder.events`).

At ``log_level: info`` a healthy file gives two lines, ``file queued`` and ``file done`` (with every
vendor id); every retry, refusal and failure is a warning or an error with its reason; ``debug``
adds a line per step. The step line is skipped before any field is built when nothing would be
written: with small files, seven lines a file cost more CPU than the journal's commits.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

from hotfolder.events import (
    ConfigReloaded,
    Event,
    FileDone,
    FileFailed,
    FileQueued,
    FileReadyAfterWaiting,
    FileRefused,
    FileWaiting,
    StepEnded,
    TargetPaused,
    TargetResumed,
)
from hotfolder.jobtools import printable
from hotfolder.logsetup import redact
from hotfolder.pipeline import OutcomeKind, State

_jobs = structlog.get_logger("hotfolder.runner")
_files = structlog.get_logger("hotfolder.watcher")
_config = structlog.get_logger("hotfolder.config")
_debug = logging.getLogger("hotfolder.runner")  # the stdlib logger behind ``_jobs``: its level check is cheap


def log_event(event: Event) -> None:
    """Write the log line(s) an event calls for."""
    if isinstance(event, StepEnded):
        _step(event)
    elif isinstance(event, FileQueued):
        job = event.job
        _jobs.info("file queued", job=job.id, target=job.target, record=job.record, file=job.name, bytes=job.size)
    elif isinstance(event, FileDone):
        job = event.job
        _jobs.info("file done", job=job.id, target=job.target, record=job.record, file=job.name, bytes=job.size,
                   ids=dict(job.vendor), took=round(event.took, 3), moved_to=job.outcome_path)
    elif isinstance(event, FileFailed):
        job = event.job
        _jobs.error("file failed", job=job.id, file=job.name, moved_to=job.outcome_path,
                    reason=(job.last_error or {}).get("reason"))
    elif isinstance(event, FileRefused):
        said = "file incomplete; moving it to failed/" if event.incomplete else "file refused; moving it to failed/"
        _jobs.warning(said, job=event.job.id, file=printable(event.job.relpath), reason=event.reason)
    elif isinstance(event, TargetPaused):
        said = ("target paused: the vendor failed requests in a row; probing it" if event.cause == "outage"
                else "target paused by the vendor's rate limit")
        _jobs.warning(said, target=event.target, seconds=round(event.seconds, 2), reason=redact(event.reason),
                      cause=event.cause)
    elif isinstance(event, TargetResumed):
        _jobs.warning("target answers again; its jobs resume", target=event.target,
                      paused_for=round(event.paused_for, 1))
    elif isinstance(event, ConfigReloaded):
        if event.ok:
            _config.info("configuration reloaded", changes=event.reason)
        else:
            _config.error("configuration reload refused; the running configuration stays", reason=event.reason)
    elif isinstance(event, FileWaiting):
        _files.info("file not ready yet", file=event.path, reason=event.reason)
    elif isinstance(event, FileReadyAfterWaiting):
        _files.info("file ready after waiting", file=event.path)


def _step(event: StepEnded) -> None:
    outcome, decision = event.outcome, event.decision
    if outcome.kind is OutcomeKind.SUCCESS and not _debug.isEnabledFor(logging.DEBUG):
        return  # nothing to say at info; skipping the fields saves CPU on every step
    job = event.job
    fields: dict[str, Any] = {
        "job": job.id, "target": job.target, "record": job.record, "file": job.name, "step": event.step.value,
        "outcome": outcome.kind.value, "next": decision.state.value,
        "duration": round(event.duration, 4), "attempts": decision.attempts,
    }
    if event.bytes:
        fields["bytes"] = event.bytes
    if event.ids:
        fields["ids"] = dict(event.ids)  # vendor ids are not secrets; they make a run traceable
    if decision.delay > 0:
        fields["retry_in"] = round(decision.delay, 2)
    kind = outcome.kind
    if kind is OutcomeKind.SUCCESS:
        _jobs.debug("step done", **fields)
    elif kind is OutcomeKind.PENDING:
        _jobs.debug("waiting", reason=outcome.reason, **fields)  # not a failure; may repeat often
    elif kind is OutcomeKind.DUPLICATE:
        _jobs.info("same bytes already attached to this record; not sent again", **fields)
    elif decision.state is State.GONE:
        _jobs.warning("file vanished from the inbox; job closed", reason=outcome.reason, **fields)
    else:
        _jobs.warning("step failed", reason=redact(outcome.reason), status=outcome.status, **fields)
