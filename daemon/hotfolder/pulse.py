"""The thread that keeps systemd informed: ``WATCHDOG=1`` while every heartbeat is healthy, and a
fresh ``STATUS=`` line. When a thread is stuck the pings stop (systemd then restarts the daemon after
``WatchdogSec``) and the log says which thread and for how long, once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from hotfolder.liveness import Liveness
from hotfolder.notify import Notifier

log = structlog.get_logger("hotfolder.notify")

STATUS_EVERY = 5.0  # seconds between STATUS= lines when there is no watchdog to ping more often


class Pulse:
    def __init__(self, notifier: Notifier, liveness: Liveness, status: Callable[[], str]) -> None:
        self._notifier = notifier
        self._liveness = liveness
        self._status = status
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_stuck = False
        self._own_beat = liveness.heartbeat("status")
        interval = notifier.watchdog_interval
        self.every = min(interval, STATUS_EVERY) if interval else STATUS_EVERY

    def start(self) -> None:
        if not self._notifier.active:
            return  # outside systemd: nobody to tell
        self._thread = threading.Thread(target=self._run, name="hotfolder-pulse", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def beat(self) -> None:
        """One round: the status line (its journal read is a heartbeat of its own), then the ping."""
        with self._own_beat.busy():
            status = self._status()
        self._notifier.status(status)
        stuck = self._liveness.stuck()
        if not stuck:
            if self._notifier.watchdog_interval:
                self._notifier.watchdog()
            self._said_stuck = False
            return
        if not self._said_stuck:
            log.error("a thread is stuck: watchdog pings stop, systemd will restart the daemon",
                      stuck={name: round(held) for name, held in stuck})
            self._said_stuck = True

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # the status could not be read: no ping this round, try again
                log.exception("could not tell systemd the status")
            if self._stop.wait(self.every):
                return
