"""The alerts at work: events in, the rules applied, alerts kept in the outbox, each channel fed.

Threads. The event subscriber (:meth:`Alerts.on_event`) runs on the daemon's workers and watcher,
so it only puts the events it cares about on a queue. One thread (``alerts``) takes them from there,
notes failed files in the outbox, applies :mod:`hotfolder.alerts.rules` and makes the alerts that are
due; one thread per channel (``alerts-<channel>``) sends what the outbox holds for it, oldest first,
and after a failed attempt waits out that alert's backoff before it tries the channel again. A slow or
dead receiver so holds up only its own channel, never an upload.

Crashes. An alert is in the outbox before anyone is told about it; a failed file is noted there a
moment after its event. The moment between the two is covered at the next start: the journal's
failed jobs since the unclean run began are noted again (a file already noted is kept once).
"""

from __future__ import annotations

import os
import queue
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from hotfolder.alerts import messages
from hotfolder.alerts.channels import Channel, DeliveryError
from hotfolder.alerts.options import NotifySettings
from hotfolder.alerts.outbox import KEEP_DELIVERED, NewAlert, Outbox, Run, outbox_path
from hotfolder.alerts.rules import (
    AlertRules,
    Notice,
    PausedNotice,
    RecoveredNotice,
    WaitingNotice,
    digest_due,
)
from hotfolder.alerts.smtp import EmailChannel
from hotfolder.alerts.webhook import WebhookChannel
from hotfolder.events import (
    Event,
    FileFailed,
    FileQueued,
    FileReadyAfterWaiting,
    FileRefused,
    FileWaiting,
    StepEnded,
    TargetPaused,
    TargetResumed,
)
from hotfolder.journal import JournalBackend
from hotfolder.pipeline import OutcomeKind, State

log = structlog.get_logger("hotfolder.alerts")

ALIVE_EVERY = 60.0  # seconds between the signs of life the unclean-stop alert quotes
FLUSH_AT_STOP = 5.0  # seconds a stop gives the channels to send what is due
LONGEST_TICK = 5.0  # the rules are looked at least this often (shorter for short intervals)
CATCH_UP_LIMIT = 5000  # failed jobs looked at after an unclean stop
_ANSWERED = (OutcomeKind.SUCCESS, OutcomeKind.DUPLICATE)


def make_channels(notify: NotifySettings) -> list[Channel]:
    channels: list[Channel] = [WebhookChannel(hook, "hotfolder-alerts") for hook in notify.webhooks]
    if notify.email is not None:
        channels.append(EmailChannel(notify.email))
    return channels


class Alerts:
    def __init__(
        self, notify: NotifySettings, journal_path: Path, inbox: Path, journal: JournalBackend,
        *, clock: Callable[[], float] = time.time,
    ) -> None:
        self.notify = notify
        self.inbox = inbox
        self.journal = journal
        self.server = notify.name or socket.gethostname()
        self.outbox_path = outbox_path(journal_path)
        self.outbox: Outbox
        self._on = False  # the outbox is open and the threads run
        self.channels = make_channels(notify)
        self.rules = AlertRules(notify.alert_after)
        self._clock = clock
        self._tick = min(LONGEST_TICK, notify.digest_interval / 4, notify.alert_after / 4)
        self._events: queue.SimpleQueue[tuple[float, Event]] = queue.SimpleQueue()
        self._paused: set[str] = set()  # targets whose answer ends a pause (read on the workers' threads)
        self._stopping = threading.Event()
        self._flushing = threading.Event()
        self._wake = {channel.name: threading.Event() for channel in self.channels}
        self._threads: list[threading.Thread] = []
        self._run_id = 0
        self._alive_at = 0.0

    # -- the subscriber: quick, never blocks ---------------------------------------------------------

    def on_event(self, event: Event) -> None:
        if not self._on:
            return
        if isinstance(event, StepEnded):
            if event.job.target in self._paused and event.outcome.kind in _ANSWERED:
                self._events.put((self._clock(), event))
            return
        if isinstance(event, TargetPaused):
            self._paused.add(event.target)
        if isinstance(event, FileFailed | TargetPaused | TargetResumed | FileWaiting | FileReadyAfterWaiting
                      | FileQueued | FileRefused):
            self._events.put((self._clock(), event))

    # -- start and stop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the outbox and start the threads; alerts that cannot work are logged, never fatal: the
        files still go up."""
        try:
            self._begin()
        except (sqlite3.Error, OSError) as error:
            log.error("alerts are OFF: their outbox cannot be used", outbox=str(self.outbox_path), error=str(error))
            return
        self._on = True
        self._spawn("alerts", self._apply_rules)
        for channel in self.channels:
            self._spawn(f"alerts-{channel.name}", lambda channel=channel: self._feed(channel))

    def _begin(self) -> None:
        self.outbox = Outbox(self.outbox_path)
        if self.outbox.recovered_from is not None:
            log.error("alert outbox was unreadable; moved aside and started afresh: alerts not yet sent are lost",
                      damaged=str(self.outbox.recovered_from))
        for channel in self.channels:
            if not channel.verifies_tls:
                log.warning("TLS verification is OFF for this alert channel (verify_tls: false)",
                            channel=channel.describe())
        now = self._clock()
        self._run_id, previous = self.outbox.begin_run(os.getpid(), now)
        self._alive_at = now
        dropped = self.outbox.forget_channels_but([channel.name for channel in self.channels])
        if dropped:
            log.warning("alerts for channels no longer configured were dropped", count=dropped)
        self.outbox.purge(now)
        if previous is not None:
            self._after_unclean_stop(previous, now)
        log.info("alerts on", channels=[channel.describe() for channel in self.channels],
                 outbox=str(self.outbox.path), waiting=self.outbox.undelivered())

    def _spawn(self, name: str, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Make a digest of the failures gathered so far, give the channels a moment to send what is
        due, and record a clean stop; what is not sent by then goes out after the next start."""
        if not self._on:
            return
        try:
            self._stop()
        except Exception:  # a full disk: the daemon's own stop must go on
            log.exception("alerts could not stop cleanly")

    def _stop(self) -> None:
        self._stopping.set()
        rules_thread, senders = self._threads[:1], self._threads[1:]
        for thread in rules_thread:
            thread.join(FLUSH_AT_STOP)
        try:
            self._take_events()
            self._make_due_alerts(self._clock(), final=True)
        except Exception:
            log.exception("alerts could not be made at stop")
        self._flushing.set()
        for wake in self._wake.values():
            wake.set()
        deadline = time.monotonic() + FLUSH_AT_STOP
        for thread in senders:
            thread.join(max(0.0, deadline - time.monotonic()))
        waiting = self.outbox.undelivered()
        if waiting:
            log.warning("alerts not delivered yet; they are kept and sent after the next start", waiting=waiting)
        self.outbox.end_run(self._run_id, self._clock())
        if not any(thread.is_alive() for thread in self._threads):
            self.outbox.close()
            for channel in self.channels:
                channel.close()
        self._threads.clear()

    def _after_unclean_stop(self, previous: Run, now: float) -> None:
        unfinished = self.journal.unfinished_count()
        log.warning("the previous run did not stop cleanly", pid=previous.pid, unfinished_jobs=unfinished)
        self._add(messages.unclean_stop(self.server, previous.pid, previous.started_at, previous.alive_at,
                                        unfinished, now))
        # Files that failed in the moment between their event and their note (or whose events were still
        # queued) are in the journal: note them again. Older ones than the outbox keeps were sent already.
        since = max(previous.started_at, now - KEEP_DELIVERED)
        failed = [job for job in self.journal.jobs(states=(State.FAILED,), limit=CATCH_UP_LIMIT)
                  if (job.finished_at or 0.0) >= since]
        added = self.outbox.note_failures(messages.failure_record(job, job.relpath) for job in failed)
        if added:
            log.info("failed files the previous run had not noted for alerts", count=added)

    # -- the rules thread ----------------------------------------------------------------------------

    def _apply_rules(self) -> None:
        while not self._stopping.is_set():
            try:
                self._take_events(wait=self._tick)
                now = self._clock()
                self._make_due_alerts(now)
                if now - self._alive_at >= ALIVE_EVERY:
                    self._alive_at = now
                    self.outbox.alive(self._run_id, now)
            except Exception:  # a full disk, a bug: alerts must never stop the daemon; try again later
                log.exception("alerts: could not apply the rules")
                self._stopping.wait(self._tick)

    def _take_events(self, wait: float = 0.0) -> None:
        failures = []
        try:
            item = self._events.get(timeout=wait) if wait > 0 else self._events.get_nowait()
            while True:
                when, event = item
                if isinstance(event, FileFailed):
                    failures.append(messages.failure_record(event.job, event.job.relpath))
                else:
                    self._apply(event, when)
                item = self._events.get_nowait()
        except queue.Empty:
            pass
        self.outbox.note_failures(failures)

    def _apply(self, event: Event, when: float) -> None:
        rules = self.rules
        if isinstance(event, TargetPaused):
            rules.target_paused(event.target, event.seconds, event.reason, when)
        elif isinstance(event, TargetResumed | StepEnded):
            target = event.target if isinstance(event, TargetResumed) else event.job.target
            rules.target_answered(target)
            self._paused.discard(target)
        elif isinstance(event, FileWaiting):
            rules.file_waiting(event.path, event.reason, when)
        elif isinstance(event, FileReadyAfterWaiting):
            rules.file_settled(event.path)
        elif isinstance(event, FileQueued | FileRefused):
            rules.file_settled(str(self.inbox / event.job.relpath))

    def _make_due_alerts(self, now: float, final: bool = False) -> None:
        for notice in self.rules.due(now, os.path.lexists):
            self._add(self._message(notice, now))
        oldest = self.outbox.oldest_pending_failure()
        if oldest is not None and (final or digest_due(now, oldest, self.outbox.last_digest_at(),
                                                      self.notify.digest_interval)):
            failures, total = self.outbox.pending_failures()
            self._add(messages.files_failed(self.server, failures, total, now), takes_failures=True)

    def _message(self, notice: Notice, now: float) -> NewAlert:
        if isinstance(notice, PausedNotice):
            return messages.target_paused(self.server, notice, now)
        if isinstance(notice, RecoveredNotice):
            return messages.target_recovered(self.server, notice, now)
        assert isinstance(notice, WaitingNotice)
        return messages.files_waiting(self.server, notice, str(self.inbox), now)

    def _add(self, alert: NewAlert, takes_failures: bool = False) -> None:
        self.outbox.add(alert, [channel.name for channel in self.channels], takes_failures=takes_failures)
        log.info("alert queued", alert=alert.id, kind=alert.kind)
        for wake in self._wake.values():
            wake.set()

    # -- one thread per channel ----------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        delay = min(self.notify.retry_backoff * 2 ** max(attempts - 1, 0), self.notify.retry_max_backoff)
        return delay * (0.8 + 0.4 * random.random())  # spread: several nodes must not retry in step

    def _feed(self, channel: Channel) -> None:
        wake = self._wake[channel.name]
        resume_at = 0.0  # after a failed attempt the channel rests until this alert's retry time
        while True:
            flushing = self._flushing.is_set()
            if self._stopping.is_set() and not flushing:
                wait_for = 0.2  # the stop is making its last alerts; then it flushes
            else:
                try:
                    resume_at = self._send_due(channel, resume_at)
                except Exception:
                    log.exception("alerts: a channel failed unexpectedly", channel=channel.describe())
                    resume_at = self._clock() + self.notify.retry_backoff
                now = self._clock()
                next_due = self.outbox.next_due(channel.name)
                if flushing and (next_due is None or max(next_due, resume_at) > now):
                    return
                wait_for = LONGEST_TICK * 6 if next_due is None else max(next_due, resume_at) - now
            wake.wait(max(0.01, min(wait_for, LONGEST_TICK * 6)))
            wake.clear()

    def _send_due(self, channel: Channel, resume_at: float) -> float:
        """Send what is due, oldest first; stop at the first failure. Returns when the channel may
        be tried again."""
        if self._clock() < resume_at:
            return resume_at
        for delivery in self.outbox.due(channel.name, self._clock()):
            try:
                channel.send(delivery)
            except DeliveryError as error:
                attempts = delivery.attempts + 1
                retry_at = self._clock() + self._backoff(attempts)
                self.outbox.attempt_failed(delivery.alert_id, channel.name, retry_at, str(error))
                log.warning("alert not delivered; will try again", channel=channel.describe(),
                            alert=delivery.alert_id, attempts=attempts,
                            retry_in=round(retry_at - self._clock(), 1), error=str(error))
                return retry_at
            self.outbox.delivered(delivery.alert_id, channel.name, self._clock())
            log.info("alert delivered", channel=channel.describe(), alert=delivery.alert_id, kind=delivery.kind)
        return 0.0
