"""What the daemon is doing right now, kept from its events: steps under way with their bytes, paused
targets, each target's last success. One subscriber of :class:`~hotfolder.events.EventBus`; the status
page, the health checks and ``hotfolder status`` read it, and nothing here reaches into the runner.

Times of steps are monotonic (a clock change must not make a worker look stuck); times shown to people
are wall-clock. The snapshot holds file paths as the inbox names them (relative): the page escapes them,
the metrics never see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from hotfolder.config import Settings
from hotfolder.events import (
    BytesSent,
    Event,
    FileDone,
    StepEnded,
    StepStarted,
    TargetHeld,
    TargetPaused,
    TargetReleased,
    TargetResumed,
)
from hotfolder.jobtools import printable
from hotfolder.logsetup import redact

log = structlog.get_logger("hotfolder.live")

RATE_LIMIT = "rate limit"
OUTAGE = "outage"  # the target's circuit: paused until a probe gets an answer (TargetResumed)
BY_HAND = "by hand"


@dataclass(slots=True)
class Running:
    """One step of one job under way."""

    job: int
    target: str
    file: str  # relative to the inbox
    step: str
    size: int
    started: float  # monotonic
    last_sign: float  # monotonic: the start, or the last bytes that went out
    sent: int = 0
    first_byte_at: float | None = None


@dataclass(slots=True)
class Pause:
    kind: str  # RATE_LIMIT, OUTAGE or BY_HAND
    reason: str
    since: float  # wall clock
    until: float | None  # wall clock; None: until resumed


class LiveState:
    """Fed by events on the workers' threads; read by the page, the checks and the live file."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._running: dict[int, Running] = {}
        self._paused: dict[str, Pause] = {}
        self._last_success: dict[str, float] = {}
        self.changed = threading.Event()  # set on every change a reader of the live file would see

    # -- the subscriber ------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, BytesSent):
            self._bytes(event)
        elif isinstance(event, StepStarted):
            job, now = event.job, self._clock()
            with self._lock:
                self._running[job.id] = Running(job.id, job.target, printable(job.relpath), event.step.value,
                                                job.size, now, now)
            self.changed.set()
        elif isinstance(event, StepEnded):
            with self._lock:
                self._running.pop(event.job.id, None)
            self.changed.set()
        elif isinstance(event, FileDone):
            with self._lock:
                self._last_success[event.job.target] = self._wall()
        elif isinstance(event, TargetPaused):
            self._rate_limited(event)
        elif isinstance(event, TargetHeld):
            with self._lock:
                self._paused[event.target] = Pause(BY_HAND, event.reason, self._wall(), None)
            self.changed.set()
        elif isinstance(event, TargetReleased):
            with self._lock:
                self._paused.pop(event.target, None)
            self.changed.set()
        elif isinstance(event, TargetResumed):
            with self._lock:
                if event.target in self._paused and self._paused[event.target].kind == OUTAGE:
                    del self._paused[event.target]
            self.changed.set()

    def _rate_limited(self, event: TargetPaused) -> None:
        now = self._wall()
        with self._lock:
            earlier = self._paused.get(event.target)
            if earlier is not None and earlier.kind == BY_HAND:
                return  # a person's pause outlasts the vendor's
            ongoing = earlier is not None and (earlier.until is None or earlier.until > now)
            # A pause that runs on keeps its start, so a target limited again and again looks as long paused as it is.
            since = earlier.since if earlier is not None and ongoing else now
            if event.cause == "outage":  # until a probe gets an answer, however long that takes
                self._paused[event.target] = Pause(OUTAGE, redact(event.reason), since, None)
            else:
                self._paused[event.target] = Pause(RATE_LIMIT, redact(event.reason), since, now + event.seconds)
        self.changed.set()

    def _bytes(self, event: BytesSent) -> None:
        now = self._clock()
        with self._lock:
            running = self._running.get(event.job.id)
            if running is None:
                return
            if running.first_byte_at is None:
                running.first_byte_at = now
            running.sent, running.size, running.last_sign = event.sent, event.total, now
        self.changed.set()

    # -- readers -------------------------------------------------------------------------------

    def running(self) -> list[Running]:
        with self._lock:
            return [Running(**{name: getattr(r, name) for name in Running.__slots__}) for r in self._running.values()]

    def stuck(self, limit: float) -> list[tuple[Running, float]]:
        """Steps with no sign of life (start, bytes) for longer than ``limit`` seconds, with that time."""
        now = self._clock()
        return [(r, now - r.last_sign) for r in self.running() if now - r.last_sign > limit]

    def paused(self) -> dict[str, Pause]:
        """Targets paused now: by a person, or by the vendor's rate limit until its time is up."""
        now = self._wall()
        with self._lock:
            return {t: p for t, p in self._paused.items() if p.until is None or p.until > now}

    def last_success(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_success)

    def uploads(self) -> list[dict[str, Any]]:
        """The steps under way, as ``hotfolder status`` and the page show them (bytes, percent, rate)."""
        now = self._clock()
        shown = []
        for r in sorted(self.running(), key=lambda r: r.started):
            rate = r.sent / (now - r.first_byte_at) if r.first_byte_at is not None and now > r.first_byte_at else 0.0
            shown.append({
                "job": r.job, "target": r.target, "file": r.file, "step": r.step, "sent": r.sent,
                "total": r.size, "percent": round(100.0 * r.sent / r.size, 1) if r.size else 100.0,
                "bytes_per_second": round(rate), "seconds": round(now - r.started, 1),
            })
        return shown

    def snapshot(self) -> dict[str, Any]:
        """What the live file holds: uploads in flight and paused targets."""
        return {
            "in_flight": self.uploads(),
            "paused": {t: {"kind": p.kind, "reason": p.reason, "since": p.since, "until": p.until}
                       for t, p in self.paused().items()},
            "last_success": self.last_success(),
        }


def live_file(settings: Settings) -> Path:
    """Where the running daemon keeps its live state for ``hotfolder status``."""
    return settings.own_file(".live.json")


class LiveFileWriter:
    """Writes the live state to a file when it changes, at most every ``interval`` seconds: ``hotfolder
    status`` runs in another process. Asleep (no wake-ups) while nothing changes."""

    def __init__(self, state: LiveState, path: Path, interval: float = 0.5) -> None:
        self._state = state
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hotfolder-live-file", daemon=True)

    def start(self) -> None:
        self._write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._state.changed.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._path.unlink()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._state.changed.wait()
            if self._stop.is_set():
                return
            self._state.changed.clear()
            self._write()
            self._stop.wait(self._interval)

    def _write(self) -> None:
        temp = self._path.with_name(self._path.name + ".tmp")
        try:
            temp.write_text(json.dumps({"pid": os.getpid(), "written": time.time(), **self._state.snapshot()}))
            os.replace(temp, self._path)
        except OSError as exc:
            log.warning("cannot write the live state for `hotfolder status`", file=str(self._path), error=str(exc))
