"""Is every thread of the daemon getting somewhere? One heartbeat per thread that does the work.

A thread waiting for work (an empty queue, the next rescan) is healthy however long it waits. A thread
inside a piece of work is healthy while it makes progress: each step, each chunk read or sent, each
folder scanned says so (:func:`progress`, which finds the calling thread's heartbeat). One that has been
inside the same piece of work without progress for longer than the limit is stuck: a dead network
mount under ``read()``, a deadlock. The watchdog pinger stops then, and systemd restarts the daemon.

The journal is written from inside these pieces of work (a worker's commit, the watcher's intake), so a
journal write that hangs shows as the thread that made it being stuck.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_current = threading.local()


class Heartbeat:
    def __init__(self, name: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._clock = clock
        self._busy_since: float | None = None  # None: waiting for work

    @contextmanager
    def busy(self) -> Iterator[None]:
        """The calling thread works on something until the block ends (its heartbeat is this one)."""
        _current.beat = self
        self._busy_since = self._clock()
        try:
            yield
        finally:
            self._busy_since = None

    def progress(self) -> None:
        if self._busy_since is not None:
            self._busy_since = self._clock()

    def stuck_for(self) -> float:
        """Seconds inside one piece of work without progress (0 while waiting for work)."""
        since = self._busy_since
        return 0.0 if since is None else max(0.0, self._clock() - since)


def progress() -> None:
    """The calling thread got somewhere (a chunk, a folder): called from long loops anywhere."""
    beat: Heartbeat | None = getattr(_current, "beat", None)
    if beat is not None:
        beat.progress()


class Liveness:
    """The heartbeats of one daemon, and the verdict the watchdog pinger asks for."""

    def __init__(self, stuck_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_after = stuck_after
        self._clock = clock
        self._beats: list[Heartbeat] = []
        self._lock = threading.Lock()

    def heartbeat(self, name: str) -> Heartbeat:
        beat = Heartbeat(name, self._clock)
        with self._lock:
            self._beats.append(beat)
        return beat

    def retire(self, beat: Heartbeat) -> None:
        """A thread that ended (a stopped worker) no longer counts."""
        with self._lock:
            if beat in self._beats:
                self._beats.remove(beat)

    def stuck(self) -> list[tuple[str, float]]:
        """The threads stuck longer than the limit, with for how long; empty when all is well."""
        with self._lock:
            beats = list(self._beats)
        return [(beat.name, held) for beat in beats if (held := beat.stuck_for()) > self.stuck_after]
