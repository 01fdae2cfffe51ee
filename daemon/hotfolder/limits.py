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
