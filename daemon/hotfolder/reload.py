"""What a reload (SIGHUP) changes: the running settings against the re-read ones, decided without I/O.

Targets added, removed and changed, the workers, retries, duplicates and the log level take effect at
once. The folders, the journal, the archive age and the watch settings belong to threads and files
opened at start: a reload keeps their running values and the log says which changed keys wait for a
restart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hotfolder.config import Settings

# Keys only a restart applies: what the watcher, the journal (and this node's place in a shared one),
# the outcome folders, the alerts' outbox and channel threads, and the HTTP endpoint were opened with.
RESTART_ONLY = ("inbox", "done", "failed", "journal", "archive_after", "watch", "notify", "node", "http")


@dataclass(frozen=True)
class ReloadPlan:
    settings: Settings  # what runs from now on
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    needs_restart: tuple[str, ...]  # keys that changed in the file but keep their running value

    def summary(self) -> str:
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if names]
        if self.needs_restart:
            parts.append(f"waiting for a restart: {', '.join(self.needs_restart)}")
        return "; ".join(parts) or "no target changed"


def plan_reload(running: Settings, loaded: Settings) -> ReloadPlan:
    needs_restart = tuple(key for key in RESTART_ONLY if getattr(running, key) != getattr(loaded, key))
    kept = {key: getattr(running, key) for key in RESTART_ONLY}
    settings = dataclasses.replace(loaded, **kept)
    old, new = running.targets, settings.targets
    # Every target is rebuilt when the retry settings change: its outage circuit probes at their pace.
    retry_changed = running.retry != settings.retry or running.workers != settings.workers
    return ReloadPlan(
        settings=settings,
        added=tuple(name for name in new if name not in old),
        removed=tuple(name for name in old if name not in new),
        changed=tuple(name for name in new if name in old and (old[name] != new[name] or retry_changed)),
        needs_restart=needs_restart,
    )


def stuck_limit(settings: Settings) -> float:
    """Seconds a thread may stay inside one piece of work without progress before it counts as stuck:
    well beyond the longest a request may legitimately wait (the targets' timeouts)."""
    longest = max((target.timeout for target in settings.targets.values()), default=60.0)
    return max(120.0, 3 * longest)
