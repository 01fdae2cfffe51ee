"""How many of a file's bytes went out so far, for whoever shows uploads in flight.

Every request body that carries a file reads it through :func:`~hotfolder.transfer.files.iter_file`,
one chunk at a time, and the HTTP client writes each chunk before it asks for the next: the bytes read
there are the bytes handed to the vendor (within one chunk). So ``iter_file`` ticks the meter of the
thread it runs on, and the runner, which knows the job a worker drives, installs that meter around a
step. A thread without a meter (the hash step reads through its own loop; tests) pays one attribute
lookup per chunk of a mebibyte.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A job's progress is said at most this often; the last byte is always said.
REPORT_EVERY = 0.25

_local = threading.local()


class Meter:
    """Counts bytes read for one job's step and calls ``report(sent, total)`` now and then."""

    def __init__(self, total: int, report: Callable[[int, int], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.sent = 0
        self._report = report
        self._clock = clock
        self._said_at = float("-inf")

    def add(self, count: int) -> None:
        self.sent += count
        now = self._clock()
        if self.sent >= self.total or now - self._said_at >= REPORT_EVERY:
            self._said_at = now
            self._report(self.sent, self.total)


@contextmanager
def metering(meter: Meter) -> Iterator[Meter]:
    """Count the file bytes this thread reads for a body while the block runs."""
    previous = getattr(_local, "meter", None)
    _local.meter = meter
    try:
        yield meter
    finally:
        _local.meter = previous


def bytes_read(count: int) -> None:
    """Called by the file reader for every chunk it hands to a request body."""
    meter = getattr(_local, "meter", None)
    if meter is not None:
        meter.add(count)
