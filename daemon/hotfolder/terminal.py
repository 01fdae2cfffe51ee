"""The live progress display of ``hotfolder once`` and ``hotfolder demo`` on a terminal.

Files and bytes so far, and each step under way with its bytes, percent and rate, redrawn four times a
second at the bottom of the terminal; the log lines keep scrolling above it (the log handler writes
through :class:`_Screen`, which lifts the display off, writes the lines and draws it again). A subscriber
of the event stream counts files; the steps under way come from the daemon's live state. Not on a
terminal (a pipe, systemd) there is no display: the log lines say it all.

Drawn with a few ANSI sequences rather than rich: with rich installed, structlog imports it in every
hotfolder process (for its tracebacks), which cost 5 MiB of RSS and about 100 ms at every start, for a
display most processes (the service) never show.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from hotfolder.events import Event, EventBus, FileDone, FileFailed, FileQueued, FileRefused, StepEnded
from hotfolder.live import LiveState
from hotfolder.logsetup import configure_logging
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.statusreport import human_size

MAX_ROWS = 8  # steps under way shown; the rest are counted
BAR_WIDTH = 30
REFRESH = 0.25
_UP_AND_CLEAR = "\x1b[{}F\x1b[J"  # to the start of the line n lines up, and clear to the end of the screen


def bar(done: float, total: float, width: int = BAR_WIDTH) -> str:
    filled = min(width, int(width * done / total)) if total > 0 else width
    return "\u2588" * filled + "\u2591" * (width - filled)


class ProgressView:
    """Counts files from the events; :meth:`lines` draws them with the steps under way."""

    def __init__(self) -> None:
        self._live: LiveState | None = None
        self._lock = threading.Lock()
        self.queued = self.done = self.failed = self.duplicates = 0
        self.bytes_total = self.bytes_done = 0

    def follow(self, events: EventBus, live: LiveState) -> None:
        """Count what ``events`` say and show the steps under way ``live`` knows of."""
        self._live = live
        events.subscribe(self)

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, FileQueued | FileRefused):
                self.queued += 1
                self.bytes_total += event.job.size
            elif isinstance(event, FileDone):
                self.done += 1
                self.bytes_done += event.job.size
            elif isinstance(event, FileFailed):
                self.failed += 1
                self.bytes_done += event.job.size
            elif isinstance(event, StepEnded) and event.outcome.kind is OutcomeKind.DUPLICATE:
                self.duplicates += 1
            elif isinstance(event, StepEnded) and event.decision.state is State.GONE:
                self.queued = max(0, self.queued - 1)
                self.bytes_total = max(0, self.bytes_total - event.job.size)

    def lines(self) -> list[str]:
        uploads = self._live.uploads() if self._live is not None else []
        with self._lock:
            finished = self.done + self.failed
            files_total = max(self.queued, finished)  # jobs resumed from an earlier run were not queued now
            bytes_total = max(self.bytes_total, self.bytes_done)
            bytes_done = min(self.bytes_done + sum(item["sent"] for item in uploads), bytes_total)
            failed = f", {self.failed} failed" if self.failed else ""
            twins = f", {self.duplicates} already there" if self.duplicates else ""
        shown = [
            f"files  {bar(finished, files_total)} {finished} of {files_total} files{failed}{twins}",
            f"bytes  {bar(bytes_done, bytes_total)} {human_size(bytes_done)} of {human_size(bytes_total)}",
        ]
        for item in uploads[:MAX_ROWS]:
            rate = f", {human_size(item['bytes_per_second'])}/s" if item["bytes_per_second"] else ""
            amount = f"{human_size(item['sent'])} of {human_size(item['total'])} ({item['percent']:g}%{rate})"
            shown.append(f"  {item['step']:<8} {bar(item['sent'], item['total'])} {item['file']}  {amount}")
        if len(uploads) > MAX_ROWS:
            shown.append(f"  and {len(uploads) - MAX_ROWS} more under way")
        return shown


class _Screen:
    """The terminal with the display at its bottom: whole lines written through it scroll above."""

    def __init__(self, out: TextIO, view: ProgressView) -> None:
        self._out = out
        self._view = view
        self._lock = threading.Lock()
        self._drawn = 0
        self._partial = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="hotfolder-display", daemon=True)

    def isatty(self) -> bool:
        return True  # the log renderer asks: readable lines, with colours

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            if "\n" in self._partial:
                complete, _, self._partial = self._partial.rpartition("\n")
                self._erase()
                self._out.write(complete + "\n")
                self._draw()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._out.flush()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            self._erase()
            self._draw()  # the last picture stays on the terminal
            self._out.flush()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            with self._lock:
                self._erase()
                self._draw()
                self._out.flush()

    def _erase(self) -> None:
        if self._drawn:
            self._out.write(_UP_AND_CLEAR.format(self._drawn))
            self._drawn = 0

    def _draw(self) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line would spoil the count
        lines = [line[:width] for line in self._view.lines()]
        self._out.write("".join(line + "\n" for line in lines))
        self._drawn = len(lines)


def on_a_terminal() -> bool:
    return sys.stdout.isatty()


@contextmanager
def shown(log_level: str) -> Iterator[ProgressView | None]:
    """On a terminal, the live display with the log lines above it (yields the view for the daemon to
    feed); elsewhere only the log lines (yields None)."""
    if not on_a_terminal():
        configure_logging(log_level)
        yield None
        return
    view = ProgressView()
    screen = _Screen(sys.stdout, view)
    configure_logging(log_level, stream=screen)  # type: ignore[arg-type]  # a writable text stream
    screen.start()
    try:
        yield view
    finally:
        screen.stop()
        configure_logging(log_level)
