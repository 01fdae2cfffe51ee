"""Wiring: settings → journal, one HTTP client and adapter per target, runner, watcher."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import structlog

from hotfolder.alerts.notifier import Alerts
from hotfolder.alerts.outbox import OUTBOX_SUFFIX
from hotfolder.config import Settings, TargetSettings, secret_values
from hotfolder.errors import ConfigError
from hotfolder.eventlog import log_event
from hotfolder.events import ConfigReloaded, EventBus, TargetPaused, TargetResumed, VendorAnswered
from hotfolder.glance import Glance
from hotfolder.guard import CircuitTransport
from hotfolder.journal import Journal, JournalBackend
from hotfolder.journal.archive_thread import ArchiveThread
from hotfolder.limits import Circuit
from hotfolder.live import LiveFileWriter, LiveState, live_file
from hotfolder.liveness import Liveness
from hotfolder.logsetup import register_secret, set_level
from hotfolder.notify import Notifier
from hotfolder.pulse import Pulse
from hotfolder.reload import plan_reload, stuck_limit
from hotfolder.runner import Runner
from hotfolder.statusreport import waiting_file
from hotfolder.vendors import adapter_class
from hotfolder.vendors.base import Vendor
from hotfolder.watch.examine import Examiner
from hotfolder.watch.mounts import inbox_attribute_cache
from hotfolder.watch.watcher import Watcher

log = structlog.get_logger("hotfolder")


class _NoCookies(httpx.Cookies):
    """A jar that keeps nothing: every vendor call carries its own credentials, so cookies would
    only be state piling up for months, sent to whoever set them. Not parsing them also saves
    httpx's per-response cookie work, about a tenth of the daemon's CPU with small files."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class ApiClient(httpx.Client):
    """httpx.Client without cookie persistence (httpx has no switch for it; see encode/httpx#2992)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._no_cookies = _NoCookies()

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise ValueError("ApiClient keeps no cookies")


def make_client(target: TargetSettings, workers: int, circuit: Circuit | None = None,
                events: EventBus | None = None) -> httpx.Client:
    """The HTTP client of one target; with ``circuit``, every request of it passes the outage circuit;
    with ``events``, every answer is told (VendorAnswered: the metrics count them by status)."""
    if not target.verify_tls:
        log.warning("TLS verification is OFF for this target (verify_tls: false)", target=target.name)
    hooks = {}
    if events is not None:
        def answered(response: httpx.Response) -> None:
            events.emit(VendorAnswered(target.name, response.status_code))

        hooks["response"] = [answered]
    size = max(workers, 4)
    transport = httpx.HTTPTransport(
        verify=target.verify_tls, limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
    )
    return ApiClient(
        base_url=target.url,
        timeout=httpx.Timeout(target.timeout, connect=min(10.0, target.timeout)),
        follow_redirects=False,  # a redirect could carry our token to another host
        event_hooks=hooks,
        transport=CircuitTransport(transport, circuit) if circuit is not None else transport,
    )


def open_journal(settings: Settings, *, daemon: bool) -> JournalBackend:
    """The journal the settings name: the SQLite file, or the PostgreSQL database shared with other nodes
    (``daemon``: this is a running daemon, which registers as a node and holds leases)."""
    if isinstance(settings.journal, Path):
        return Journal(settings.journal, daemon=daemon)
    from hotfolder.journal.postgres import PostgresJournal  # psycopg is loaded only where it is used

    settings.node.state.mkdir(parents=True, exist_ok=True)
    # A worker inside a link holds a connection for the record's lock and takes a second for its writes;
    # the heartbeat, the watcher's intake and the archive take one each.
    return PostgresJournal(settings.journal, node=settings.node.name, lease=settings.node.lease, daemon=daemon,
                           pool_size=2 * settings.workers + 4)


class Daemon:
    """One running hotfolder: start() it, then stop() it; run_once() for the `once` command.

    ``load`` re-reads the configuration for :meth:`reload` (SIGHUP); ``notifier`` tells systemd.
    """

    def __init__(self, settings: Settings, *, load: Callable[[], Settings] | None = None,
                 notifier: Notifier | None = None) -> None:
        self.settings = settings
        self._load = load
        self.notifier = notifier if notifier is not None else Notifier(environ={})
        for folder in (settings.inbox, settings.done, settings.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self.journal = open_journal(settings, daemon=True)
        if self.journal.recovered_from is not None:
            log.error("journal was damaged; moved aside and started afresh", damaged=str(self.journal.recovered_from))
        if self.journal.archive_recovered_from is not None:
            log.error("journal archive was unreadable; moved aside and started afresh: files finished before "
                      "now can no longer be recognised as twins", damaged=str(self.journal.archive_recovered_from))
        self.archiver = ArchiveThread(self.journal, settings.archive_after)
        # What happens to files goes out as events; the log lines are their first subscriber.
        self.events = EventBus()
        self.events.subscribe(log_event)
        self.liveness = Liveness(stuck_after=stuck_limit(settings))
        # What is under way now, for `hotfolder status` (the live file), the status page and the health checks.
        self.live = LiveState()
        self.events.subscribe(self.live)
        self.glance = Glance(self.live.paused)
        self.events.subscribe(self.glance.on_event)
        self.live_writer = LiveFileWriter(self.live, live_file(settings))
        self.endpoint = None
        if settings.http is not None:
            from hotfolder.endpoint import Endpoint  # imported late: without `http:` none of it is loaded

            self.endpoint = Endpoint(settings, self.journal, self.live, self.events)
        self.adapters: dict[str, Vendor] = {}
        self.clients: list[httpx.Client] = []  # every client made, closed at stop (a reload's old ones too)
        for target in settings.targets.values():
            self._add_target(target)
        cache = inbox_attribute_cache(settings.inbox, settings.watch.attribute_cache)
        examiner = Examiner(
            check_writers=settings.watch.check_writers, check_complete=settings.watch.check_complete,
            # NFS (close-to-open) and SMB answer an open from the server: a settled file is looked at so.
            look_through_open=cache is not None and cache.revalidated_on_open,
        )
        # Alerts by webhook and email: one more subscriber, with an outbox of its own.
        self.alerts: Alerts | None = None
        if settings.notify is not None:
            for secret in secret_values(settings):  # the alerts redact with the log's redactor
                register_secret(secret)
            self.alerts = Alerts(settings.notify, settings.own_file(OUTBOX_SUFFIX), settings.inbox, self.journal)
            self.events.subscribe(self.alerts.on_event)
        self.runner = Runner(settings, self.journal, self.adapters, on_file_left_inbox=self._forget,
                             writers_checked=lambda: examiner.writer_check_off is None, cache=cache,
                             events=self.events, liveness=self.liveness)
        self.watcher = Watcher(
            settings.inbox,
            method=settings.watch.method,
            settle=settings.watch.settle,
            poll_interval=settings.watch.poll_interval,
            rescan_interval=settings.watch.rescan,
            ignore=settings.watch.ignore,
            on_ready=self.runner.submit,
            on_ready_batch=self.runner.submit_many,
            on_refused=self._refused,
            examiner=examiner,
            incomplete_timeout=settings.watch.incomplete_timeout,
            status_file=waiting_file(settings),
            on_incomplete=self.runner.submit_incomplete,
            cache=cache,
            events=self.events,
            liveness=self.liveness,
        )
        self.pulse = Pulse(self.notifier, self.liveness, self.status_line)

    def _add_target(self, target: TargetSettings) -> None:
        """Build (or rebuild) one target: its folder, its outage circuit, its client and adapter."""
        (self.settings.inbox / target.name).mkdir(exist_ok=True)
        retry = self.settings.retry
        circuit = Circuit(target.name, first_probe=retry.backoff, longest_probe=retry.max_backoff,
                          probe_grace=2 * target.timeout + 10)
        circuit.on_pause = lambda seconds, reason: self.events.emit(
            TargetPaused(target.name, seconds, reason, cause="outage"))
        circuit.on_resume = lambda paused_for: self.events.emit(TargetResumed(target.name, paused_for))
        client = make_client(target, self.settings.workers, circuit, self.events)
        self.clients.append(client)
        adapter = adapter_class(target)(target, client)
        adapter.secret_found = register_secret
        self.adapters[target.name] = adapter

    def status_line(self) -> str:
        in_flight = self.runner.in_flight_count()
        return self.glance.line(max(0, self.journal.unfinished_count() - in_flight), in_flight)

    def reload(self) -> bool:
        """Re-read the configuration (SIGHUP) and apply it without dropping a job; False if refused.

        A configuration that does not load is refused whole: the running one stays, the log names the
        key, and systemd's status says so. Keys only a restart can change keep their running values.
        """
        self.notifier.reloading()
        try:
            if self._load is None:
                raise ConfigError("reload", "this daemon was started without a configuration file to re-read")
            plan = plan_reload(self.settings, self._load())
        except ConfigError as error:
            self.events.emit(ConfigReloaded(False, str(error)))
            self.notifier.ready(self.status_line())
            return False
        except Exception as error:  # a bug must not take the running daemon down with the reload
            log.exception("reload failed")
            self.events.emit(ConfigReloaded(False, f"internal error ({type(error).__name__}); see the log"))
            self.notifier.ready(self.status_line())
            return False
        self.settings = plan.settings
        for name in plan.removed:
            self.adapters.pop(name, None)  # its jobs wait in the journal for it to come back
        for name in (*plan.added, *plan.changed):
            self._add_target(plan.settings.targets[name])  # jobs in flight finish on the old client
        set_level(plan.settings.log_level)
        self.liveness.stuck_after = stuck_limit(plan.settings)
        self.runner.reload(plan.settings)
        if self.endpoint is not None:
            self.endpoint.reloaded(plan.settings)
        self.events.emit(ConfigReloaded(True, plan.summary()))
        self.notifier.ready(self.status_line())
        return True

    def _forget(self, path: Path) -> None:
        self.watcher.forget(path)

    def _refused(self, path: Path, reason: str) -> None:
        log.warning("not a regular file, left alone", file=str(path), reason=reason)

    def start(self) -> None:
        """Start the work; when this returns the daemon is ready: the journal is open (checked, its WAL
        recovered), the workers have its unfinished jobs in hand (an interrupted move is finished by its
        job, not repeated), and the first scan of the inbox has handed what it found to the watcher."""
        log.info(
            "hotfolder starting", inbox=str(self.settings.inbox), targets=sorted(self.settings.targets),
            workers=self.settings.workers, unfinished_jobs=self.journal.unfinished_count(),
            **({"node": self.settings.node.name} if self.settings.shared_journal else {}),
        )
        if self.alerts is not None:
            self.alerts.start()  # first: it tells of an unclean stop before the work resumes
        self.live_writer.start()
        self.runner.start()
        self.watcher.start()
        self.archiver.start()
        if self.endpoint is not None:
            self.endpoint.start(self.runner, self.watcher, self.liveness)
        log.info("watching", inbox=str(self.settings.inbox), mode=self.watcher.mode)
        self.pulse.start()

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
        self.pulse.stop()
        self.archiver.stop()
        self.watcher.stop()
        self.runner.stop()
        self.live_writer.stop()
        if self.alerts is not None:
            self.alerts.stop()  # after the runner: its last failures go into the last digest
        for client in self.clients:
            client.close()
        self.journal.close()
        log.info("hotfolder stopped")

    def run_until(self, stop: threading.Event, reload: threading.Event | None = None) -> None:
        """Run until ``stop`` is set; each time ``reload`` is set, re-read the configuration."""
        self.start()
        self.notifier.ready(self.status_line())
        try:
            while not stop.is_set():
                if reload is None:
                    stop.wait()
                elif reload.wait(0.5):
                    reload.clear()
                    self.reload()
        finally:
            self.notifier.stopping()
            self.stop()

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Process what is in the inbox now; 0 if every job ended done, 1 if any failed."""
        started = time.time()
        self.archiver.run_pass()  # here rather than in the background: `once` is a batch run
        self.start()
        stop = stop or threading.Event()
        try:
            # Idle means: nothing waiting to settle and no unfinished job. Checked twice in a row
            # so a file handed from the watcher to the runner between the two looks is not missed.
            quiet = 0
            while not stop.is_set() and quiet < 2:
                busy = self.watcher.pending_count() > 0 or not self.runner.idle()
                quiet = 0 if busy else quiet + 1
                stop.wait(0.2)
            failed = self.journal.failed_since(started)
        finally:
            self.stop()
        return 1 if failed else 0
