"""``/healthz`` (is it alive?) and ``/readyz`` (is it doing its job?): each a verdict with reasons.

Alive: every worker thread runs, no step has gone without a sign of life (its start, bytes going out)
for longer than ``http.stuck_after``, no thread is stuck by the watchdog's measure (``hotfolder.liveness``:
the watcher's threads too), and the journal answers and its folder can be written. A step held up by
a vendor that does not answer is what a hung worker looks like from outside: a restart is the remedy a
supervisor can apply, so it makes the daemon not alive.

Ready: the first rescan of the inbox is done, the inbox can be listed, and no target has been paused
for longer than ``paused_limit`` (files for it pile up unseen otherwise).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hotfolder.journal import JournalBackend
from hotfolder.live import LiveState


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: list[str] = field(default_factory=list)

    def body(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "fail", "reasons": self.reasons}


def _verdict(reasons: list[str]) -> Verdict:
    return Verdict(not reasons, reasons)


class Health:
    def __init__(
        self,
        *,
        live: LiveState,
        journal: JournalBackend,
        journal_path: Path,
        inbox: Path,
        workers_missing: Callable[[], int],
        stuck_threads: Callable[[], list[tuple[str, float]]] = list,
        first_rescan_done: Callable[[], bool],
        stuck_after: float,
        paused_limit: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._journal = journal
        self._journal_path = journal_path
        self._inbox = inbox
        self._workers_missing = workers_missing
        self._stuck_threads = stuck_threads
        self._first_rescan_done = first_rescan_done
        self._stuck_after = stuck_after
        self._paused_limit = paused_limit
        self._wall = wall

    def alive(self) -> Verdict:
        reasons = []
        missing = self._workers_missing()
        if missing:
            reasons.append(f"{missing} worker thread(s) have stopped")
        for step, quiet in self._live.stuck(self._stuck_after):
            reasons.append(f"a worker has been at step {step.step} of job {step.job} (target {step.target}) "
                           f"for {quiet:.0f}s without progress (http.stuck_after: {self._stuck_after:g}s)")
        for name, quiet in self._stuck_threads():  # the watchdog's view (hotfolder.liveness): the watcher too
            reasons.append(f"thread {name} has been busy without progress for {quiet:.0f}s")
        reasons.extend(self._journal_trouble())
        return _verdict(reasons)

    def _journal_trouble(self) -> list[str]:
        try:
            self._journal.unfinished_count()
        except Exception as exc:
            return [f"the journal does not answer: {type(exc).__name__}"]
        folder = self._journal_path.parent
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return [f"the journal's folder {folder} is on a read-only filesystem"]
        except OSError as exc:
            return [f"the journal's folder {folder} cannot be examined: {exc.strerror}"]
        if not os.access(folder, os.W_OK):
            return [f"the journal's folder {folder} is not writable"]
        return []

    def ready(self) -> Verdict:
        reasons = []
        if not self._first_rescan_done():
            reasons.append("the first rescan of the inbox is not done yet")
        try:
            with os.scandir(self._inbox) as entries:
                next(entries, None)
        except OSError as exc:
            reasons.append(f"the inbox {self._inbox} cannot be listed: {exc.strerror}")
        now = self._wall()
        for target, pause in sorted(self._live.paused().items()):
            if now - pause.since > self._paused_limit:
                reasons.append(f"target {target} has been paused ({pause.kind}) for {now - pause.since:.0f}s "
                               f"(http.paused_limit: {self._paused_limit:g}s): {pause.reason}")
        return _verdict(reasons)
