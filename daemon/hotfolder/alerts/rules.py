"""When an alert is due: paused targets, files waiting, the failure digest. No I/O, no threads.

The service feeds what the events say, with the time, and asks :meth:`AlertRules.due` now and then;
each notice comes out once. What it remembers lives in memory only: after a restart a pause or a
wait is timed again from the first event that says so (an alert already made is in the outbox).

A pause. The events say a target was paused for so many seconds (a 429, the vendor's outage); a
pause renewed before the last one ran out, or within :data:`PAUSE_GRACE` after, is the same
pause. It is worth an alert once it has lasted ``alert_after``; it ends when the target answers
again (a step of its jobs succeeds, or it is resumed), and then, if an alert went out, so does a
recovery. A pause that lapses with no renewal and no answer (its jobs were all taken away) ends
without a word.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

PAUSE_GRACE = 60.0  # seconds after a pause ran out during which a new one continues it
DIGEST_GATHER = 30.0  # the first failure after a quiet time waits this long (at most) for its fellows
MAX_LISTED = 200  # files named in one message; the rest are counted


@dataclass
class _Pause:
    since: float
    until: float
    reason: str
    alerted: bool = False


@dataclass
class _Wait:
    reason: str
    since: float
    alerted: bool = False


@dataclass(frozen=True)
class PausedNotice:
    target: str
    since: float
    reason: str


@dataclass(frozen=True)
class RecoveredNotice:
    target: str
    since: float  # when the pause began


@dataclass(frozen=True)
class WaitingFile:
    path: str
    reason: str
    since: float


@dataclass(frozen=True)
class WaitingNotice:
    files: tuple[WaitingFile, ...]


Notice = PausedNotice | RecoveredNotice | WaitingNotice


@dataclass
class AlertRules:
    alert_after: float
    _pauses: dict[str, _Pause] = field(default_factory=dict)
    _waits: dict[str, _Wait] = field(default_factory=dict)
    _recovered: list[RecoveredNotice] = field(default_factory=list)

    # -- what the events say ---------------------------------------------------------------------------

    def target_paused(self, target: str, seconds: float, reason: str, now: float) -> None:
        pause = self._pauses.get(target)
        if pause is not None and (pause.alerted or now <= pause.until + PAUSE_GRACE):
            pause.until = max(pause.until, now + seconds)
            pause.reason = reason
        else:
            self._pauses[target] = _Pause(since=now, until=now + seconds, reason=reason)

    def target_answered(self, target: str) -> None:
        pause = self._pauses.pop(target, None)
        if pause is not None and pause.alerted:
            self._recovered.append(RecoveredNotice(target, pause.since))

    def file_waiting(self, path: str, reason: str, now: float) -> None:
        wait = self._waits.setdefault(path, _Wait(reason, now))
        wait.reason = reason

    def file_settled(self, path: str) -> None:
        self._waits.pop(path, None)

    # -- what is due -----------------------------------------------------------------------------------

    def due(self, now: float, still_there: Callable[[str], bool]) -> list[Notice]:
        """Notices that became due, each once; ``still_there(path)`` drops waits whose file went away."""
        notices: list[Notice] = list(self._recovered)
        self._recovered.clear()
        for target, pause in list(self._pauses.items()):
            if pause.alerted:
                continue
            if now > pause.until + PAUSE_GRACE:
                del self._pauses[target]
            elif now - pause.since >= self.alert_after:
                pause.alerted = True
                notices.append(PausedNotice(target, pause.since, pause.reason))
        overdue = [(path, wait) for path, wait in self._waits.items()
                   if not wait.alerted and now - wait.since >= self.alert_after]
        waiting = []
        for path, wait in overdue:
            if not still_there(path):
                del self._waits[path]
                continue
            wait.alerted = True
            waiting.append(WaitingFile(path, wait.reason, wait.since))
        if waiting:
            notices.append(WaitingNotice(tuple(waiting)))
        return notices

    def paused_targets(self) -> list[str]:
        return sorted(self._pauses)


def digest_due(now: float, oldest_pending: float | None, last_sent: float | None, interval: float) -> bool:
    """Whether the failures gathered so far go out now: at most one digest per ``interval``, and the
    first after a quiet time waits up to :data:`DIGEST_GATHER` so files failing together go together."""
    if oldest_pending is None:
        return False
    if last_sent is not None and now < last_sent + interval:
        return False
    return now >= oldest_pending + min(interval, DIGEST_GATHER)
