"""What an alert says: its JSON document (the webhook's body, and what the outbox keeps) and its email.

Every alert is one JSON object with ``id`` (stable: the same on every retry and on every channel),
``kind``, ``server``, ``created_at`` (ISO 8601, UTC), ``summary`` (one line) and the fields of its
kind. The email is rendered from that same document, so both channels say the same thing.

Text that came from outside (vendors' reasons, file names) is redacted again here (the events'
contract), and file names are shown with control characters escaped: a name is hostile input, and a
newline in one must not forge a line of the message.
"""

from __future__ import annotations

import json
import os
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from hotfolder.alerts.outbox import NewAlert
from hotfolder.alerts.rules import MAX_LISTED, PausedNotice, RecoveredNotice, WaitingNotice
from hotfolder.logsetup import redact

FILES_FAILED = "files_failed"
TARGET_PAUSED = "target_paused"
TARGET_RECOVERED = "target_recovered"
FILES_WAITING = "files_waiting"
UNCLEAN_STOP = "unclean_stop"


def stamp(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shown(text: str) -> str:
    """Text from outside, redacted and on one line (undecodable bytes and control characters escaped)."""
    printable = os.fsencode(text).decode("utf-8", "backslashreplace")
    escaped = "".join(
        char if unicodedata.category(char) not in ("Cc", "Zl", "Zp") else f"\\x{ord(char):02x}"
        if ord(char) < 0x100 else f"\\u{ord(char):04x}" for char in printable
    )
    return redact(escaped)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)}s"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def _alert(kind: str, server: str, summary: str, now: float, fields: Mapping[str, Any]) -> NewAlert:
    alert_id = str(uuid.uuid4())
    document = {"id": alert_id, "kind": kind, "server": server, "created_at": stamp(now),
                "summary": summary, **fields}
    return NewAlert(alert_id, kind, now, json.dumps(document, ensure_ascii=False, separators=(",", ":")))


# --- the kinds ------------------------------------------------------------------------------------------


def failure_record(job: Any, inbox_relpath: str) -> dict[str, Any]:
    """What a digest says of one failed job (a journal ``Job``), noted when it fails."""
    error = job.last_error or {}
    return {
        "job_id": job.id,
        "failed_at": job.finished_at or job.updated_at,
        "file": shown(inbox_relpath),
        "target": shown(job.target),
        "record": None if job.record is None else shown(job.record),
        "step": error.get("step"),
        "status": error.get("status"),
        "reason": shown(str(error.get("reason") or "no reason recorded")),
        "moved_to": None if job.outcome_path is None else shown(job.outcome_path),
    }


def files_failed(server: str, failures: Sequence[Mapping[str, Any]], total: int, now: float) -> NewAlert:
    listed = [{**failure, "failed_at": stamp(failure["failed_at"])} for failure in failures[:MAX_LISTED]]
    summary = f"{_plural(total, 'file')} failed"
    return _alert(FILES_FAILED, server, summary, now, {"count": total, "not_listed": total - len(listed),
                                                       "files": listed})


def target_paused(server: str, notice: PausedNotice, now: float) -> NewAlert:
    summary = f"target {shown(notice.target)} paused for {_duration(now - notice.since)}"
    return _alert(TARGET_PAUSED, server, summary, now, {
        "target": shown(notice.target), "paused_since": stamp(notice.since),
        "paused_for_seconds": round(now - notice.since), "reason": shown(notice.reason),
    })


def target_recovered(server: str, notice: RecoveredNotice, now: float) -> NewAlert:
    summary = f"target {shown(notice.target)} answers again after {_duration(now - notice.since)}"
    return _alert(TARGET_RECOVERED, server, summary, now, {
        "target": shown(notice.target), "paused_since": stamp(notice.since),
        "paused_for_seconds": round(now - notice.since),
    })


def files_waiting(server: str, notice: WaitingNotice, inbox: str, now: float) -> NewAlert:
    files = [{
        "file": shown(os.path.relpath(waiting.path, inbox)), "reason": shown(waiting.reason),
        "waiting_since": stamp(waiting.since), "waiting_for_seconds": round(now - waiting.since),
    } for waiting in notice.files[:MAX_LISTED]]
    total = len(notice.files)
    summary = f"{_plural(total, 'file')} not ready for {_duration(now - min(w.since for w in notice.files))}"
    return _alert(FILES_WAITING, server, summary, now, {"count": total, "not_listed": total - len(files),
                                                        "files": files})


def unclean_stop(server: str, pid: int, started_at: float, alive_at: float, unfinished: int, now: float) -> NewAlert:
    summary = "started again after an unclean stop"
    return _alert(UNCLEAN_STOP, server, summary, now, {
        "previous_run": {"pid": pid, "started_at": stamp(started_at), "last_alive_at": stamp(alive_at)},
        "unfinished_jobs": unfinished,
    })


# --- the email ------------------------------------------------------------------------------------------


def email_subject(document: Mapping[str, Any]) -> str:
    return f"[hotfolder {document['server']}] {document['summary']}"


def email_text(document: Mapping[str, Any]) -> str:
    """The plain-text body of an alert's email."""
    kind = document["kind"]
    lines = [f"{document['summary']} on {document['server']} ({document['created_at']}).", ""]
    if kind == FILES_FAILED:
        for file in document["files"]:
            status = f" (HTTP {file['status']})" if file.get("status") else ""
            where = f"target {file['target']}" + (f", record {file['record']}" if file.get("record") else "")
            lines += [file["file"], f"  {where}, step {file.get('step') or '?'}{status}, at {file['failed_at']}",
                      f"  reason: {file['reason']}"]
            if file.get("moved_to"):
                lines.append(f"  moved to: {file['moved_to']}")
            lines.append("")
    elif kind == FILES_WAITING:
        for file in document["files"]:
            lines += [file["file"], f"  not ready since {file['waiting_since']}: {file['reason']}", ""]
    elif kind == TARGET_PAUSED:
        lines += [f"Target {document['target']} has been paused since {document['paused_since']}.",
                  f"Last reason: {document['reason']}", "Its files wait in the inbox and resume by themselves.", ""]
    elif kind == TARGET_RECOVERED:
        lines += [f"Target {document['target']} answers again; it was paused since {document['paused_since']}.", ""]
    elif kind == UNCLEAN_STOP:
        previous = document["previous_run"]
        lines += [f"The previous run (pid {previous['pid']}, started {previous['started_at']}) did not stop "
                  f"cleanly; it was last seen alive at {previous['last_alive_at']}.",
                  f"{_plural(document['unfinished_jobs'], 'unfinished job')} resume where the journal left them.",
                  ""]
    if document.get("not_listed"):
        lines += [f"... and {document['not_listed']} more not listed here.", ""]
    lines.append(f"Alert id: {document['id']}")
    return "\n".join(lines) + "\n"
