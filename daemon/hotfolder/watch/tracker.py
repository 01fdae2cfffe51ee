"""When is a file ready? Every settle and readiness decision, as one object that does no I/O.

Theory of operation
-------------------
The tracker never touches the file system, a clock or a log. The watcher's settle thread (the I/O
edge, :mod:`hotfolder.watch.watcher`) feeds it *observations*: what ``lstat`` said of a path, the
answers of the readiness tests it was asked to run, the time. It answers with what to do: nothing,
examine the file, hand it over, refuse it, or let it wait (and say so once). So every rule below is
tested with made-up observations (``tests/test_tracker.py``), as the pipeline is.

* A regular, non-empty file becomes a *candidate* with its (size, mtime) and the time they were
  first seen. A candidate is looked at again when it comes due (:meth:`due`) or when an event
  nominates it; when the same figures are still there ``quiet_for`` after they were first seen
  (``watch.settle``, plus a network mount's cache where no open can bypass it), the answer is
  :class:`Examine`: run the readiness tests.
* The tests' :class:`Answers`: figures seen through an open (on mounts that answer opens afresh)
  that differ start settle again from them; a writer still holding the file open, or a format's
  end still missing, make it :class:`Wait` (looked at again ``recheck`` later; the first wait for
  each reason is flagged so that it is logged once, not once per look); an end still missing
  ``incomplete_timeout`` after it was first found missing gives :class:`Refuse` (to ``failed/``).
  A writer at work stops that timeout: it starts when the writer is gone. All clear:
  :class:`Ready`, once per (path, size, mtime).
* Empty files are no candidates: a scanner may create first and fill later, and the fill nominates
  the file again. A poller cannot see a fill (the folder does not change), so when
  ``empty_recheck`` is set an empty file is looked at again that often; it does not count as
  pending work.
* Anything but a regular file is refused once, with what it is (:class:`Refused`: left alone, not
  moved); a folder or a vanished path is dropped; so is a path the daemon :meth:`forget`\\ s.
* What was handed over is remembered by its figures, so the same file is not handed over twice;
  a file that changes after it was handed over is a new candidate.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from hotfolder.watch.writers import WRITER_OPEN

# --- what the tracker answers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Nothing:
    """Nothing to do now."""


@dataclass(frozen=True, slots=True)
class Examine:
    """Quiet for long enough: run the readiness tests and tell :meth:`ReadinessTracker.examined`."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Hand the file over."""

    waited: bool = False  # it had been waiting for a writer or its end


@dataclass(frozen=True, slots=True)
class Wait:
    """Not finished yet; looked at again later."""

    reason: str
    first: bool  # the first wait for this reason: say it (once)


@dataclass(frozen=True, slots=True)
class Refuse:
    """Incomplete for longer than allowed: to ``failed/`` with the reason."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """Not a regular file: left alone, said once."""

    reason: str


Verdict = Nothing | Examine | Ready | Wait | Refuse | Refused
NOTHING = Nothing()
EXAMINE = Examine()


@dataclass(frozen=True, slots=True)
class Answers:
    """What the readiness tests found; a test not made answers as if it passed."""

    fresh: tuple[int, int] | None = None  # (size, mtime_ns) through an open, where one was taken
    writer_open: bool = False
    incomplete: str | None = None  # why the format's end is missing


@dataclass(frozen=True, slots=True)
class Waiting:
    """A file not ready yet, for ``hotfolder status``."""

    path: str
    reason: str
    since: float  # tracker time of its first wait


def incomplete_for_too_long(reason: str, timeout: float) -> str:
    """Why a file whose end stayed missing for ``timeout`` is refused (the hash step says it too)."""
    return f"{reason} (still incomplete after {timeout:g}s, watch.incomplete_timeout)"


# --- the tracker ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    size: int
    mtime_ns: int
    due: float  # when to look again: these figures will then have held for quiet_for


@dataclass(slots=True)
class _Wait:
    reason: str
    since: float
    incomplete_since: float | None  # when the end was first found missing, while no writer is at work


class ReadinessTracker:
    """The state of every path the watcher was told about; see the module's theory of operation.

    Times are the caller's clock (monotonic seconds). Not thread-safe: one thread owns it.
    """

    def __init__(
        self,
        *,
        quiet_for: float,
        recheck: float,
        incomplete_timeout: float = 600.0,
        empty_recheck: float | None = None,
    ) -> None:
        self.quiet_for = quiet_for
        self.recheck = recheck
        self.incomplete_timeout = incomplete_timeout
        self.empty_recheck = empty_recheck
        self._candidates: dict[str, _Candidate] = {}
        self._due: list[tuple[float, str]] = []
        self._reported: dict[str, tuple[int, int]] = {}
        self._refused: set[str] = set()
        self._empty: dict[str, float] = {}
        self._waiting: dict[str, _Wait] = {}
        self.waiting_changed = False  # since the list of waiting files was last taken

    # -- observations ----------------------------------------------------------------------------

    def file_seen(self, path: str, size: int, mtime_ns: int, now: float) -> Verdict:
        """``lstat`` found a regular file with these figures (at ``now``)."""
        self._refused.discard(path)
        if size == 0:
            self.forget(path)
            if self.empty_recheck is not None:
                self._empty[path] = due = now + self.empty_recheck
                heapq.heappush(self._due, (due, path))
            return NOTHING
        self._empty.pop(path, None)
        figures = (size, mtime_ns)
        if self._reported.get(path) == figures:
            self._candidates.pop(path, None)
            return NOTHING
        candidate = self._candidates.get(path)
        if candidate is None or (candidate.size, candidate.mtime_ns) != figures:
            self._start(path, figures, now)
            return NOTHING
        return EXAMINE if now >= candidate.due else NOTHING

    def other_seen(self, path: str, what: str) -> Verdict:
        """``lstat`` found something that is not a regular file (``what`` says which)."""
        self._candidates.pop(path, None)
        self._reported.pop(path, None)
        self._empty.pop(path, None)
        self._stop_waiting(path)
        if path in self._refused:
            return NOTHING
        self._refused.add(path)
        return Refused(what)

    def look_failed(self, path: str, now: float) -> None:
        """``lstat`` failed for a reason other than the path being gone: look again later."""
        candidate = self._candidates.get(path)
        if candidate is not None:
            self._schedule(path, candidate, now + self.quiet_for)
        elif path in self._empty and self.empty_recheck is not None:
            self._empty[path] = due = now + self.empty_recheck
            heapq.heappush(self._due, (due, path))

    def examined(self, path: str, answers: Answers, now: float) -> Verdict:
        """The readiness tests' answers for a candidate :meth:`file_seen` asked to examine."""
        candidate = self._candidates.get(path)
        if candidate is None:
            return NOTHING
        figures = (candidate.size, candidate.mtime_ns)
        if answers.fresh is not None and answers.fresh != figures:
            self._start(path, answers.fresh, now)  # the cached figures were old: settle on the fresh ones
            return NOTHING
        if answers.writer_open:
            first = self._note(path, WRITER_OPEN, now, incomplete=False)
            self._schedule(path, candidate, now + self.recheck)
            return Wait(WRITER_OPEN, first)
        if answers.incomplete is not None:
            first = self._note(path, answers.incomplete, now, incomplete=True)
            since = self._waiting[path].incomplete_since
            assert since is not None
            if now - since >= self.incomplete_timeout:
                self._hand_over(path, figures)
                return Refuse(incomplete_for_too_long(answers.incomplete, self.incomplete_timeout))
            self._schedule(path, candidate, now + self.recheck)
            return Wait(answers.incomplete, first)
        return Ready(waited=self._hand_over(path, figures))

    def gone(self, path: str) -> None:
        """The path is no longer there, or is a folder now."""
        self.forget(path)

    def forget(self, path: str) -> None:
        """Drop everything known of ``path``: whatever is there next is new."""
        self._candidates.pop(path, None)
        self._reported.pop(path, None)
        self._refused.discard(path)
        self._empty.pop(path, None)
        self._stop_waiting(path)

    # -- what to look at ---------------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """The paths to look at again now, earliest first (each once; stale entries skipped)."""
        paths: list[str] = []
        while self._due and self._due[0][0] <= now:
            due, path = heapq.heappop(self._due)
            candidate = self._candidates.get(path)
            if (candidate is not None and candidate.due == due) or self._empty.get(path) == due:
                paths.append(path)
        return paths

    def next_due(self) -> float | None:
        """When the earliest look is due (possibly a stale entry: a little early is harmless)."""
        return self._due[0][0] if self._due else None

    def known(self) -> set[str]:
        """Every path remembered, so that a full rescan can look again at those it did not meet."""
        return {*self._candidates, *self._reported, *self._refused}

    def pending_count(self) -> int:
        """Candidates not handed over yet (waiting ones included; empty files not)."""
        return len(self._candidates)

    def waiting(self) -> list[Waiting]:
        """The files waiting for a writer or their end, sorted by path; clears ``waiting_changed``."""
        self.waiting_changed = False
        return [Waiting(path, wait.reason, wait.since) for path, wait in sorted(self._waiting.items())]

    # -- internals ---------------------------------------------------------------------------------

    def _start(self, path: str, figures: tuple[int, int], now: float) -> None:
        candidate = _Candidate(figures[0], figures[1], 0.0)
        self._candidates[path] = candidate
        self._schedule(path, candidate, now + self.quiet_for)

    def _schedule(self, path: str, candidate: _Candidate, due: float) -> None:
        candidate.due = due
        heapq.heappush(self._due, (due, path))

    def _hand_over(self, path: str, figures: tuple[int, int]) -> bool:
        """Remember ``path`` as handed over with ``figures``; True if it had been waiting."""
        del self._candidates[path]
        self._reported[path] = figures
        return self._stop_waiting(path)

    def _note(self, path: str, reason: str, now: float, *, incomplete: bool) -> bool:
        """Record that ``path`` waits for ``reason``; True if that is news (new, or a new reason)."""
        wait = self._waiting.get(path)
        news = wait is None or wait.reason != reason
        if wait is None:
            wait = self._waiting[path] = _Wait(reason, now, None)
        wait.reason = reason
        if incomplete:
            if wait.incomplete_since is None:
                wait.incomplete_since = now
        else:
            wait.incomplete_since = None  # a writer is at work: the timeout starts when it stops
        self.waiting_changed = self.waiting_changed or news
        return news

    def _stop_waiting(self, path: str) -> bool:
        if self._waiting.pop(path, None) is None:
            return False
        self.waiting_changed = True
        return True
