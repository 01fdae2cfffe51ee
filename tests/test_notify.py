"""The sd_notify protocol over a real AF_UNIX datagram socket, as systemd would read it: the messages of
``hotfolder run`` and their order (ready, status, reload, stopping), both address forms, and the watchdog
pings stopping while a worker hangs inside a call."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hotfolder.notify import Notifier
from tests.harness import TOKEN, Site, hotfolder, site, wait_for

__all__ = ["site"]  # the fixture, used by name


class NotifySocket:
    """systemd's end: a bound datagram socket, with every message received and when."""

    def __init__(self, address: str) -> None:
        self.name = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self._socket.settimeout(0.1)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def fields(self) -> list[str]:
        return [field for _at, fields in list(self.messages) for field in fields]

    def times_of(self, field: str) -> list[float]:
        return [at for at, fields in list(self.messages) if field in fields]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    abstract = f"@hotfolder-test-{os.getpid()}-{id(request)}"
    address = str(tmp_path / "notify.sock") if request.param == "path" else abstract
    receiver = NotifySocket(address)
    yield receiver
    receiver.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    quiet = Notifier(environ={})
    assert not quiet.active and quiet.watchdog_interval is None
    assert quiet.ready("x") is False and quiet.watchdog() is False


def test_watchdog_interval_is_a_third_of_watchdog_usec_and_only_for_the_named_pid() -> None:
    assert Notifier(environ={"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000"}).watchdog_interval == 1.0
    mine = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ=mine).watchdog_interval == 1.0
    assert Notifier(environ={**mine, "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_run_says_ready_status_reloading_and_stopping_in_order(site: Site, notify_socket: NotifySocket) -> None:
    site.drop("rec-1", "before-start.pdf", b"%PDF-1.4 already there")
    env = {"NOTIFY_SOCKET": notify_socket.name, "WATCHDOG_USEC": "600000"}
    process = hotfolder("run", "-c", str(site.config_path), log=site.root / "daemon.log", env_extra=env)
    try:
        wait_for(lambda: "READY=1" in notify_socket.fields(), what="READY=1")
        wait_for(lambda: len(notify_socket.times_of("WATCHDOG=1")) >= 3, what="watchdog pings")
        wait_for(lambda: any(f.startswith("STATUS=") and "1 done" in f for f in notify_socket.fields()),
                 what="a status line counting the done file")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "RELOADING=1" in notify_socket.fields(), what="RELOADING=1")
        wait_for(lambda: notify_socket.fields().count("READY=1") == 2, what="READY=1 after the reload")
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    fields = notify_socket.fields()
    reloading = fields.index("RELOADING=1")
    assert fields[reloading + 1].startswith("MONOTONIC_USEC=")
    assert 0 < int(fields[reloading + 1].split("=")[1]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first_ready = fields.index("READY=1")
    assert first_ready < reloading < len(fields) - 1 - fields[::-1].index("READY=1")
    assert fields.index("STOPPING=1") > reloading
    assert not any(TOKEN in field for field in fields)


def test_watchdog_pings_stop_while_a_worker_hangs_in_a_call_then_resume(site: Site, tmp_path: Path) -> None:
    """The vendor holds the presign for 4 s (a hung server); a worker inside that call for longer than the
    limit stops the pings; once the answer comes they resume."""
    from hotfolder.service import Daemon

    receiver = NotifySocket(str(tmp_path / "wd.sock"))
    site.sandbox.add_fault("POST", r"^/api/v2/attachments$", action="delay", delay=4.0)
    notifier = Notifier(environ={"NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "300000"})
    daemon = Daemon(site.settings(), notifier=notifier)
    daemon.liveness.stuck_after = 1.0
    daemon.start()
    try:
        wait_for(lambda: len(receiver.times_of("WATCHDOG=1")) >= 2, what="the first pings")
        site.drop("rec-1", "held.pdf", b"%PDF-1.4 held by the server")
        wait_for(lambda: any(r["method"] == "POST" for r in site.sandbox.requests()) or daemon.runner.in_flight_count(),
                 what="the presign to be sent")
        hung_at = time.monotonic()
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "held.pdf").exists(), timeout=20, what="done")
        done_at = time.monotonic()
        wait_for(lambda: any(t > done_at for t in receiver.times_of("WATCHDOG=1")), what="pings after the answer")
    finally:
        daemon.stop()
        receiver.close()
    pings = receiver.times_of("WATCHDOG=1")
    # Stuck from 1 s into the hang until the answer (at 4 s): no ping in between (margin for the check period).
    silent = [t for t in pings if hung_at + 1.6 < t < hung_at + 3.6]
    assert silent == [], f"pings while the worker was stuck: {[round(t - hung_at, 2) for t in silent]}"
    assert any(t < hung_at for t in pings) and any(t > done_at for t in pings)


def test_refused_reload_says_so_in_status_and_keeps_working(site: Site, tmp_path: Path) -> None:
    from hotfolder.config import load_settings
    from hotfolder.service import Daemon

    receiver = NotifySocket(str(tmp_path / "st.sock"))
    daemon = Daemon(site.settings(), notifier=Notifier(environ={"NOTIFY_SOCKET": receiver.name}),
                    load=lambda: load_settings(site.config_path, environ={"FULCRUM_TOKEN": TOKEN}))
    daemon.start()
    try:
        config = yaml.safe_load(site.config_path.read_text())
        config["workers"] = "many"
        site.config_path.write_text(yaml.safe_dump(config))
        assert daemon.reload() is False
        wait_for(lambda: any("reload refused: workers" in f for f in receiver.fields()), what="the refusal")
        site.drop("rec-1", "after.pdf", b"%PDF-1.4 after a refused reload")
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "after.pdf").exists(), what="done after the refusal")
    finally:
        daemon.stop()
        receiver.close()
