"""Per-target pacing: requests per second, concurrent uploads, and a shared pause after 429/420.

A rate limit is the vendor's word about the whole account, not about one file, so when one
job is told to slow down every job of that target slows down. Workers are never parked on a
long wait: a job that would have to wait more than ``MAX_INLINE_WAIT`` goes back to the
journal as PENDING (no attempt spent) and the worker takes other work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind

MAX_INLINE_WAIT = 1.0  # seconds a worker may sleep for pacing before handing the job back
DEFAULT_RATE_LIMIT_PAUSE = 5.0  # when a 429/420 carries no Retry-After; doubled while they repeat
MAX_RATE_LIMIT_PAUSE = 300.0


class TargetGate:
    def __init__(
        self,
        name: str,
        *,
        requests_per_second: float | None = None,
        max_concurrent_uploads: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._uploads = threading.BoundedSemaphore(max_concurrent_uploads) if max_concurrent_uploads else None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0  # when the next request may start (evenly spaced requests)
        self._paused_until = 0.0
        self._consecutive_limits = 0

    # -- requests ------------------------------------------------------------------------------

    def before_request(self) -> None:
        """Wait for this target's pacing; hand the job back if the wait would be long."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_slot, self._paused_until)
            wait = start - now
            if wait > MAX_INLINE_WAIT:
                raise StepError(
                    OutcomeKind.PENDING, f"target {self.name} is slowed down (rate limit)", retry_after=wait
                )
            self._next_slot = start + self._interval
        if wait > 0:
            self._sleep(wait)

    def rate_limited(self, retry_after: float | None) -> float:
        """A 429/420 was received: pause the whole target; returns the pause in seconds."""
        with self._lock:
            self._consecutive_limits += 1
            if retry_after is None:
                pause = min(DEFAULT_RATE_LIMIT_PAUSE * 2 ** (self._consecutive_limits - 1), MAX_RATE_LIMIT_PAUSE)
            else:
                pause = min(max(retry_after, 0.0), MAX_RATE_LIMIT_PAUSE)
            self._paused_until = max(self._paused_until, self._clock() + pause)
            return pause

    def answered(self) -> None:
        """A request went through without a rate limit: forget the escalation."""
        self._consecutive_limits = 0

    # -- uploads -------------------------------------------------------------------------------

    @contextmanager
    def upload_slot(self) -> Iterator[None]:
        if self._uploads is None:
            yield
            return
        if not self._uploads.acquire(timeout=MAX_INLINE_WAIT):
            raise StepError(OutcomeKind.PENDING, f"target {self.name}: all upload slots busy", retry_after=0.5)
        try:
            yield
        finally:
            self._uploads.release()


# -- the outage circuit ------------------------------------------------------------------------

CIRCUIT_FAILURES = 3  # requests in a row without an answer (connection errors, timeouts, 5xx) that pause a target


class TargetUnavailable(StepError):
    """The target is paused for an outage (or is not configured): the job waits, no attempt spent."""

    def __init__(self, target: str, reason: str, retry_after: float) -> None:
        super().__init__(OutcomeKind.PENDING, reason, retry_after=retry_after)
        self.target = target


class Circuit:
    """Stops a target's jobs from hammering a vendor that is down.

    After ``CIRCUIT_FAILURES`` requests in a row failed without an answer, across all of the target's
    jobs, the target pauses: its requests are refused here (their jobs wait, no attempt spent), except
    one probe after ``first_probe`` seconds, then after twice as long each time the probe fails, up to
    ``longest_probe``. Any answer (a 4xx or a 429 is an answer) closes the circuit and the jobs resume.
    ``on_pause(seconds, reason)`` is called when the pause begins and after each failed probe,
    ``on_resume(paused_for)`` when it ends; both outside the lock.
    """

    def __init__(
        self,
        name: str,
        *,
        first_probe: float,
        longest_probe: float,
        probe_grace: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.first_probe = max(first_probe, 0.01)
        self.longest_probe = max(longest_probe, self.first_probe)
        self._probe_grace = probe_grace  # a probe without a verdict this long is presumed lost
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._last_reason = ""
        self._opened_at: float | None = None  # None: closed, requests go through
        self._interval = self.first_probe
        self._next_probe_at = 0.0
        self._probe_until = 0.0  # a probe is out until then
        self.on_pause: Callable[[float, str], None] = lambda seconds, reason: None
        self.on_resume: Callable[[float], None] = lambda paused_for: None

    @property
    def paused(self) -> bool:
        return self._opened_at is not None

    def admit(self) -> bool:
        """May a request go out now? True if it is the probe; raises TargetUnavailable if it must wait."""
        with self._lock:
            if self._opened_at is None:
                return False
            now = self._clock()
            if now >= self._next_probe_at and now >= self._probe_until:
                self._probe_until = now + self._probe_grace
                return True
            wait = max(self._next_probe_at - now, 0.0) if now < self._next_probe_at else self._interval
            reason = self._why(wait)
        # A little after the probe: if it is answered, these jobs are woken at once anyway.
        raise TargetUnavailable(self.name, reason, wait + 0.25)

    def failed(self, reason: str, *, probe: bool) -> None:
        """A request got no answer (connection error, timeout) or a 5xx."""
        with self._lock:
            now = self._clock()
            self._last_reason = reason
            if self._opened_at is None:
                self._failures += 1
                if self._failures < CIRCUIT_FAILURES:
                    return
                self._opened_at = now
                self._interval = self.first_probe
            elif probe:
                self._interval = min(self._interval * 2, self.longest_probe)
                self._probe_until = 0.0
            else:
                return  # sent before the pause began: the probe alone decides now
            self._next_probe_at = now + self._interval
            seconds, said = self._interval, self._why(self._interval)
        self.on_pause(seconds, said)

    def answered(self) -> None:
        with self._lock:
            self._failures = 0
            opened_at, self._opened_at = self._opened_at, None
            self._probe_until = 0.0
            if opened_at is None:
                return
            paused_for = self._clock() - opened_at
        self.on_resume(paused_for)

    def probe_lost(self) -> None:
        """The probe ended without a verdict: the next request may probe."""
        with self._lock:
            self._probe_until = 0.0

    def _why(self, wait: float) -> str:
        return (f"target {self.name} is paused: its vendor failed {CIRCUIT_FAILURES} requests in a row "
                f"(last: {self._last_reason}); next probe in {wait:.0f}s")
