"""The daemon at a glance, in one line for systemd's ``STATUS=`` (what ``systemctl status`` shows):
files queued and in flight, done and failed in the last hour, paused targets and why, a refused
reload. Kept current by listening to the events; the queue figures are read when the line is made.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from hotfolder.events import ConfigReloaded, Event, FileDone, FileFailed, TargetPaused, TargetResumed

HOUR = 3600.0


class Glance:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._done: deque[float] = deque()
        self._failed: deque[float] = deque()
        self._paused: dict[str, tuple[float, str]] = {}  # target → (until, cause); until inf for an outage
        self._refused: str | None = None  # the last reload's refusal, until a reload succeeds

    def on_event(self, event: Event) -> None:
        now = self._clock()
        with self._lock:
            if isinstance(event, FileDone):
                self._done.append(now)
            elif isinstance(event, FileFailed):
                self._failed.append(now)
            elif isinstance(event, TargetPaused):
                until = float("inf") if event.cause == "outage" else now + event.seconds
                self._paused[event.target] = (until, "outage" if event.cause == "outage" else "rate limit")
            elif isinstance(event, TargetResumed):
                self._paused.pop(event.target, None)
            elif isinstance(event, ConfigReloaded):
                self._refused = None if event.ok else event.reason

    def paused_targets(self) -> dict[str, str]:
        now = self._clock()
        with self._lock:
            return {name: cause for name, (until, cause) in sorted(self._paused.items()) if until > now}

    def line(self, queued: int, in_flight: int) -> str:
        now = self._clock()
        with self._lock:
            for times in (self._done, self._failed):
                while times and times[0] < now - HOUR:
                    times.popleft()
            done, failed, refused = len(self._done), len(self._failed), self._refused
        parts = [f"{queued} queued, {in_flight} in flight; last hour: {done} done, {failed} failed"]
        paused = self.paused_targets()
        if paused:
            parts.append("paused: " + ", ".join(f"{name} ({cause})" for name, cause in paused.items()))
        if refused:
            parts.append(f"reload refused: {refused}")
        return "; ".join(parts)
