"""The live progress display of ``hotfolder once`` and ``hotfolder demo`` on a terminal (rich).

Files and bytes so far, and each step under way with its bytes, percent and rate, redrawn four times a
second below the log lines, which rich keeps printing above it. A subscriber of the event stream counts
files; the steps under way come from the daemon's live state. Not on a terminal (a pipe, systemd) there
is no display: the log lines say it all.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from hotfolder.events import Event, EventBus, FileDone, FileFailed, FileQueued, FileRefused, StepEnded
from hotfolder.live import LiveState
from hotfolder.logsetup import configure_logging
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.statusreport import human_size

MAX_ROWS = 8  # steps under way shown; the rest are counted


class ProgressView:
    """Counts files from the events; renders itself (rich calls ``__rich__`` at every refresh)."""

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

    def __rich__(self) -> RenderableType:
        uploads = self._live.uploads() if self._live is not None else []
        with self._lock:
            finished = self.done + self.failed
            files_total = max(self.queued, finished)  # jobs resumed from an earlier run were not queued now
            bytes_total = max(self.bytes_total, self.bytes_done)
            failed = f", [red]{self.failed} failed[/red]" if self.failed else ""
            twins = f", {self.duplicates} already there" if self.duplicates else ""
            files_line = f"{finished} of {files_total} files{failed}{twins}"
            bytes_done = min(self.bytes_done + sum(item["sent"] for item in uploads), bytes_total)
            bytes_line = f"{human_size(bytes_done)} of {human_size(bytes_total)}"
        grid = Table.grid(padding=(0, 1))
        grid.add_row("[bold]files[/bold]", ProgressBar(total=max(files_total, 1), completed=finished, width=30),
                     files_line)
        grid.add_row("[bold]bytes[/bold]", ProgressBar(total=max(bytes_total, 1), completed=bytes_done, width=30),
                     bytes_line)
        for item in uploads[:MAX_ROWS]:
            rate = f", {human_size(item['bytes_per_second'])}/s" if item["bytes_per_second"] else ""
            bar = ProgressBar(total=max(item["total"], 1), completed=item["sent"], width=30)
            amount = f"{human_size(item['sent'])} of {human_size(item['total'])} ({item['percent']:g}%{rate})"
            grid.add_row(f"  {item['step']}", bar, f"{item['file']}  {amount}")
        if len(uploads) > MAX_ROWS:
            grid.add_row("", "", f"and {len(uploads) - MAX_ROWS} more under way")
        return Group(grid)


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
    try:
        with Live(view, console=Console(), refresh_per_second=4, redirect_stdout=True, redirect_stderr=True):
            configure_logging(log_level)  # now: sys.stdout is rich's, which prints above the display
            yield view
    finally:
        configure_logging(log_level)  # the terminal itself again
