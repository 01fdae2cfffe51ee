"""Wiring: settings → journal, one HTTP client and adapter per target, runner, watcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import structlog

from hotfolder.config import Settings, TargetSettings
from hotfolder.eventlog import log_event
from hotfolder.events import EventBus, VendorAnswered
from hotfolder.journal import Journal
from hotfolder.journal.archive_thread import ArchiveThread
from hotfolder.live import LiveFileWriter, LiveState, live_file
from hotfolder.logsetup import register_secret
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


def make_client(target: TargetSettings, workers: int, events: EventBus | None = None) -> httpx.Client:
    if not target.verify_tls:
        log.warning("TLS verification is OFF for this target (verify_tls: false)", target=target.name)
    hooks = {}
    if events is not None:
        def answered(response: httpx.Response) -> None:
            events.emit(VendorAnswered(target.name, response.status_code))

        hooks["response"] = [answered]
    return ApiClient(
        event_hooks=hooks,
        base_url=target.url,
        timeout=httpx.Timeout(target.timeout, connect=min(10.0, target.timeout)),
        verify=target.verify_tls,
        follow_redirects=False,  # a redirect could carry our token to another host
        limits=httpx.Limits(max_connections=max(workers, 4), max_keepalive_connections=max(workers, 4)),
    )


class Daemon:
    """One running hotfolder: start() it, then stop() it; run_once() for the `once` command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for folder in (settings.inbox, settings.done, settings.failed):
            folder.mkdir(parents=True, exist_ok=True)
        for name in settings.targets:
            (settings.inbox / name).mkdir(exist_ok=True)
        self.journal = Journal(settings.journal, daemon=True)
        if self.journal.recovered_from is not None:
            log.error("journal was damaged; moved aside and started afresh", damaged=str(self.journal.recovered_from))
        if self.journal.archive_recovered_from is not None:
            log.error("journal archive was unreadable; moved aside and started afresh: files finished before "
                      "now can no longer be recognised as twins", damaged=str(self.journal.archive_recovered_from))
        self.archiver = ArchiveThread(self.journal, settings.archive_after)
        # What happens to files goes out as events; the log lines are their first subscriber, the live
        # state (for `hotfolder status`, the page and the health checks) the second.
        self.events = EventBus()
        self.events.subscribe(log_event)
        self.live = LiveState()
        self.events.subscribe(self.live)
        self.live_writer = LiveFileWriter(self.live, live_file(settings.journal))
        self.endpoint = None
        if settings.http is not None:
            from hotfolder.endpoint import Endpoint  # imported late: without `http:` none of it is loaded

            self.endpoint = Endpoint(settings, self.journal, self.live, self.events)
        self.clients: list[httpx.Client] = []
        adapters: dict[str, Vendor] = {}
        for name, target in settings.targets.items():
            client = make_client(target, settings.workers, self.events)
            self.clients.append(client)
            adapter = adapter_class(target)(target, client)
            adapter.secret_found = register_secret
            adapters[name] = adapter
        cache = inbox_attribute_cache(settings.inbox, settings.watch.attribute_cache)
        examiner = Examiner(
            check_writers=settings.watch.check_writers, check_complete=settings.watch.check_complete,
            # NFS (close-to-open) and SMB answer an open from the server: a settled file is looked at so.
            look_through_open=cache is not None and cache.revalidated_on_open,
        )
        self.runner = Runner(settings, self.journal, adapters, on_file_left_inbox=self._forget,
                             writers_checked=lambda: examiner.writer_check_off is None, cache=cache,
                             events=self.events)
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
        )

    def _forget(self, path: Path) -> None:
        self.watcher.forget(path)

    def _refused(self, path: Path, reason: str) -> None:
        log.warning("not a regular file, left alone", file=str(path), reason=reason)

    def start(self) -> None:
        log.info(
            "hotfolder starting", inbox=str(self.settings.inbox), targets=sorted(self.settings.targets),
            workers=self.settings.workers, unfinished_jobs=self.journal.unfinished_count(),
        )
        self.live_writer.start()
        self.runner.start()
        self.watcher.start()
        self.archiver.start()
        if self.endpoint is not None:
            self.endpoint.start(self.runner, self.watcher)
        log.info("watching", inbox=str(self.settings.inbox), mode=self.watcher.mode)

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()
        self.archiver.stop()
        self.watcher.stop()
        self.runner.stop()
        self.live_writer.stop()
        for client in self.clients:
            client.close()
        self.journal.close()
        log.info("hotfolder stopped")

    def run_until(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
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
