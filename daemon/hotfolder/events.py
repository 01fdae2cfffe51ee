"""What happens to files, as typed events: the seam between the daemon's work and whoever watches it.

The watcher and the runner say what happened (a file waits, a job was queued, a step ended, a file
is done or failed, a target paused or resumed, a reload) by emitting an event on the :class:`EventBus`; they never log
those lines themselves, and nothing that reports on the daemon reaches into them. The log lines are
one subscriber (:mod:`hotfolder.eventlog`); metrics, alerts and a status page subscribe the same way.

Subscribers run on the emitting thread, synchronously and in order, so they must be quick and
must not block (hand work to a thread of their own if they need one). One that raises is logged
and the others still run: watching must never stop the work. Events carry journal rows and
outcomes as they are; the reasons in them are already redacted where they came from the vendor,
but a subscriber that sends them anywhere redacts again (as the log's own processor does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from hotfolder.journal import Job
from hotfolder.pipeline import Decision, Outcome, State

log = structlog.get_logger("hotfolder.events")


@dataclass(frozen=True, slots=True)
class FileWaiting:
    """A settled file is not finished yet (a writer holds it, its end is missing): said once per reason."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileReadyAfterWaiting:
    path: str


@dataclass(frozen=True, slots=True)
class FileQueued:
    """A ready file became a job. The workers are woken before these go out (a large batch of log
    lines would hold them back), so a job's first StepEnded may come before its FileQueued."""

    job: Job


@dataclass(frozen=True, slots=True)
class FileRefused:
    """A file the layout refuses, or one incomplete for too long: a job that goes to failed/."""

    job: Job
    reason: str
    incomplete: bool = False  # its end was missing for longer than watch.incomplete_timeout


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A worker begins one step of one job (what is in flight, and since when, for health and the page)."""

    step: State
    job: Job


@dataclass(frozen=True, slots=True)
class BytesSent:
    """The file's bytes handed to the vendor so far in the step under way (said at most a few times a
    second per job, and once when the last byte went out)."""

    job: Job
    sent: int
    total: int


@dataclass(frozen=True, slots=True)
class VendorAnswered:
    """A vendor (or its S3) answered a request of ``target`` with an HTTP ``status``."""

    target: str
    status: int


@dataclass(frozen=True, slots=True)
class StepEnded:
    """One step of one job ran and its decision is committed (``job`` is the row after the commit)."""

    step: State
    job: Job
    outcome: Outcome
    decision: Decision
    duration: float
    bytes: int = 0
    ids: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FileDone:
    job: Job
    took: float  # seconds from the job's creation


@dataclass(frozen=True, slots=True)
class FileFailed:
    job: Job


@dataclass(frozen=True, slots=True)
class TargetPaused:
    """All jobs of a target wait: the vendor rate-limited it (429/420, ``cause`` "rate_limit"), or it
    failed several requests in a row (connection errors, timeouts, 5xx: ``cause`` "outage"), in which
    case one probe request goes out after ``seconds``, and again at growing intervals while it fails."""

    target: str
    seconds: float
    reason: str
    cause: str = "rate_limit"  # "rate_limit" | "outage"


@dataclass(frozen=True, slots=True)
class TargetResumed:
    """A target paused for an outage answered its probe: its jobs go on."""

    target: str
    paused_for: float  # seconds since the outage pause began


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    """A reload (SIGHUP) was applied (``ok``), or refused with the old config kept (``reason`` says why)."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TargetHeld:
    """A person paused a target (the page): no job of it is started until it is released."""

    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class TargetReleased:
    """A person resumed a target they had paused."""

    target: str


Event = (
    FileWaiting | FileReadyAfterWaiting | FileQueued | FileRefused | StepStarted | BytesSent | VendorAnswered
    | StepEnded | FileDone | FileFailed | TargetPaused | TargetResumed | ConfigReloaded | TargetHeld | TargetReleased
)
Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            # A new tuple, not an append: emitters read the field without the lock.
            self._subscribers = (*self._subscribers, subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("event subscriber failed", subscriber=repr(subscriber), kind=type(event).__name__)
