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
from hotfolder.events import EventBus
from hotfolder.journal import Journal, JournalBackend
from hotfolder.journal.archive_thread import ArchiveThread
from hotfolder.logsetup import register_secret
from hotfolder.runner import Runner
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


def make_client(target: TargetSettings, workers: int) -> httpx.Client:
    if not target.verify_tls:
        log.warning("TLS verification is OFF for this target (verify_tls: false)", target=target.name)
    return ApiClient(
        base_url=target.url,
        timeout=httpx.Timeout(target.timeout, connect=min(10.0, target.timeout)),
        verify=target.verify_tls,
        follow_redirects=False,  # a redirect could carry our token to another host
        limits=httpx.Limits(max_connections=max(workers, 4), max_keepalive_connections=max(workers, 4)),
    )


def waiting_file(settings: Settings) -> Path:
    """Where the running daemon lists the files not ready yet, for ``hotfolder status`` (each node its own)."""
    if isinstance(settings.journal, Path):
        return settings.journal.with_name(settings.journal.name + ".waiting.json")
    return settings.node.state / f"{settings.node.name}.waiting.json"


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
    """One running hotfolder: start() it, then stop() it; run_once() for the `once` command."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for folder in (settings.inbox, settings.done, settings.failed):
            folder.mkdir(parents=True, exist_ok=True)
        for name in settings.targets:
            (settings.inbox / name).mkdir(exist_ok=True)
        self.journal = open_journal(settings, daemon=True)
        if self.journal.recovered_from is not None:
            log.error("journal was damaged; moved aside and started afresh", damaged=str(self.journal.recovered_from))
        if self.journal.archive_recovered_from is not None:
            log.error("journal archive was unreadable; moved aside and started afresh: files finished before "
                      "now can no longer be recognised as twins", damaged=str(self.journal.archive_recovered_from))
        self.archiver = ArchiveThread(self.journal, settings.archive_after)
        self.clients: list[httpx.Client] = []
        adapters: dict[str, Vendor] = {}
        for name, target in settings.targets.items():
            client = make_client(target, settings.workers)
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
        # What happens to files goes out as events; the log lines are their first subscriber.
        self.events = EventBus()
        self.events.subscribe(log_event)
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
            **({"node": self.settings.node.name} if self.settings.shared_journal else {}),
        )
        self.runner.start()
        self.watcher.start()
        self.archiver.start()
        log.info("watching", inbox=str(self.settings.inbox), mode=self.watcher.mode)

    def stop(self) -> None:
        self.archiver.stop()
        self.watcher.stop()
        self.runner.stop()
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
