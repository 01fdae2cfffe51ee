"""What ``hotfolder status --json`` prints and ``/api/status`` serves: one report, built in one place.

It joins three sources: the journal (jobs by step, failures, successes), the list of files not ready yet
that the watcher keeps, and the live state of the running daemon (steps under way with their bytes,
paused targets). The command reads the last two from the files the daemon keeps beside its journal;
the daemon's own endpoint hands its live state in directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hotfolder.config import Settings
from hotfolder.jobtools import printable
from hotfolder.journal import Job, JournalBackend
from hotfolder.journal.model import NodeInfo
from hotfolder.options import shown_database_url
from hotfolder.pipeline import TERMINAL_STATES, State


def iso(when: float | None) -> str | None:
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def human_size(count: float) -> str:
    """Bytes as people read them: 512 B, 1.5 MiB."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def waiting_file(settings: Settings) -> Path:
    """Where the running daemon lists the files not ready yet, for ``hotfolder status``."""
    return settings.own_file(".waiting.json")


def _written_by_a_running_daemon(path: Path) -> dict[str, Any] | None:
    """A JSON file the daemon keeps beside its journal, if the daemon that wrote it still runs."""
    try:
        content = json.loads(path.read_text())
        with contextlib.suppress(PermissionError):  # running as another user (the service's): alive
            os.kill(int(content["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no daemon running, or none has written it
    return content if isinstance(content, dict) else None


def not_ready(path: Path) -> list[dict[str, Any]]:
    """The files the running daemon waits for (none if it is stopped)."""
    listing = _written_by_a_running_daemon(path) or {}
    return [{"file": printable(w["file"]), "reason": w["reason"], "since": iso(w["since"]), "since_unix": w["since"]}
            for w in listing.get("waiting", [])]


def live_from_file(path: Path) -> Mapping[str, Any]:
    """The running daemon's live state as its live file holds it (empty if it is stopped)."""
    return _written_by_a_running_daemon(path) or {}


def _failure(job: Job, failed_root: Path) -> dict[str, Any]:
    error = job.last_error or {}
    where = Path(job.outcome_path) if job.outcome_path else None
    still_there = where is not None and where.is_relative_to(failed_root) and where.is_file()
    return {
        "job": job.id, "target": job.target, "file": printable(job.relpath), "step": error.get("step"),
        "reason": error.get("reason"), "http_status": error.get("status"), "moved_to": job.outcome_path,
        "at": iso(job.finished_at), "retryable": still_there,
    }


def _success(job: Job) -> dict[str, Any]:
    return {"job": job.id, "target": job.target, "file": printable(job.relpath), "ids": dict(job.vendor),
            "moved_to": job.outcome_path, "at": iso(job.finished_at)}


def build_report(settings: Settings, journal: JournalBackend, live: Mapping[str, Any],
                 waiting: list[dict[str, Any]], *, limit: int = 20) -> dict[str, Any]:
    now = time.time()
    counts = journal.counts_by_state()
    unfinished = journal.jobs(unfinished=True, limit=200)
    failures = journal.jobs(states=(State.FAILED,), limit=limit)
    successes = journal.jobs(states=(State.DONE,), limit=limit)
    oldest_job = journal.oldest_unfinished()
    oldest_file = min((w["since_unix"] for w in waiting), default=None)
    oldest = min((t for t in (oldest_job, oldest_file) if t is not None), default=None)
    paused: Mapping[str, Any] = live.get("paused", {})
    last_live: Mapping[str, float] = live.get("last_success", {})
    last_done: dict[str, float] = {}
    for job in successes:
        if job.finished_at is not None and job.target not in last_done:
            last_done[job.target] = job.finished_at
    return {
        "journal": shown_database_url(settings.journal) if isinstance(settings.journal, str) else str(settings.journal),
        "daemon_running": bool(live),
        "targets": {
            name: {
                "vendor": target.vendor,
                "paused": dict(paused[name], since=iso(paused[name]["since"]), until=iso(paused[name]["until"]))
                if name in paused else None,
                "last_success": iso(last_live.get(name) or last_done.get(name)),
            }
            for name, target in settings.targets.items()
        },
        "in_flight": list(live.get("in_flight", [])),
        "oldest_waiting": None if oldest is None else {"since": iso(oldest), "seconds": round(now - oldest, 1)},
        "not_ready": [{k: v for k, v in w.items() if k != "since_unix"} for w in waiting],
        "unfinished_by_step": {s: n for s, n in counts.items() if State(s) not in TERMINAL_STATES},
        "finished": {s: n for s, n in counts.items() if State(s) in TERMINAL_STATES},
        "archived": journal.archived_count(),
        "unfinished": [
            {
                "job": job.id, "target": job.target, "file": printable(job.relpath), "step": job.state.value,
                "attempts": job.attempts, "next_attempt_in": round(max(0.0, job.next_attempt_at - now), 1),
                "last_error": (job.last_error or {}).get("reason"),
            }
            for job in unfinished
        ],
        "failures": [_failure(job, settings.failed) for job in failures],
        "successes": [_success(job) for job in successes],
        # Only a journal shared by several daemons (PostgreSQL) knows nodes.
        **({"nodes": [_node_report(node, settings.node.lease, now) for node in journal.nodes()]}
           if hasattr(journal, "nodes") else {}),
    }


def _node_report(node: NodeInfo, lease: float, now: float) -> dict[str, Any]:
    """One daemon sharing a PostgreSQL journal: stopped, running, or silent (killed, frozen or cut off: no
    heartbeat for a whole lease, so its jobs go to the others)."""
    age = max(0.0, now - node.heartbeat_at)
    if node.stopped_at is not None:
        state = "stopped"
    elif age <= lease:
        state = "running"
    else:
        state = f"silent (no heartbeat for over {lease:g}s: dead, frozen or cut off; its jobs go to the others)"
    return {
        "name": node.name, "host": node.host, "pid": node.pid, "state": state,
        "last_heartbeat": iso(node.heartbeat_at), "heartbeat_age": round(age, 1), "jobs_held": node.jobs_held,
    }
