"""The daemon at a glance, in one line for systemd's ``STATUS=`` (what ``systemctl status`` shows):
files queued and in flight, done and failed in the last hour, paused targets and why, a refused
reload. Kept current by listening to the events; the queue figures are read when the line is made,
and the paused targets are asked of the live state (``live.LiveState``), which already keeps them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from hotfolder.events import ConfigReloaded, Event, FileDone, FileFailed
from hotfolder.live import Pause

HOUR = 3600.0


class Glance:
    def __init__(self, paused: Callable[[], Mapping[str, Pause]], clock: Callable[[], float] = time.monotonic) -> None:
        self._paused = paused
        self._clock = clock
        self._lock = threading.Lock()
        self._done: deque[float] = deque()
        self._failed: deque[float] = deque()
        self._refused: str | None = None  # the last reload's refusal, until a reload succeeds

    def on_event(self, event: Event) -> None:
        now = self._clock()
        with self._lock:
            if isinstance(event, FileDone):
                self._done.append(now)
            elif isinstance(event, FileFailed):
                self._failed.append(now)
            elif isinstance(event, ConfigReloaded):
                self._refused = None if event.ok else event.reason

    def line(self, queued: int, in_flight: int) -> str:
        now = self._clock()
        with self._lock:
            for times in (self._done, self._failed):
                while times and times[0] < now - HOUR:
                    times.popleft()
            done, failed, refused = len(self._done), len(self._failed), self._refused
        parts = [f"{queued} queued, {in_flight} in flight; last hour: {done} done, {failed} failed"]
        paused = self._paused()
        if paused:
            parts.append("paused: " + ", ".join(f"{name} ({pause.kind})" for name, pause in sorted(paused.items())))
        if refused:
            parts.append(f"reload refused: {refused}")
        return "; ".join(parts)
