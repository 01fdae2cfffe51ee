"""Telling systemd how the daemon is doing: the sd_notify protocol, with the standard library only.

systemd passes ``NOTIFY_SOCKET``, the address of an AF_UNIX datagram socket (a leading ``@`` names
one in the abstract namespace), and reads ``KEY=value`` lines from each datagram sent there
(sd_notify(3)). Without ``NOTIFY_SOCKET`` (started by hand, or by ``Type=simple``) every call here
does nothing, so the daemon behaves the same outside systemd.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("hotfolder.notify")


def _address(name: str) -> str | bytes:
    if name.startswith("@"):
        return b"\0" + name[1:].encode()  # the abstract namespace: no file, a NUL first byte
    return name


class Notifier:
    """One connection to systemd's notify socket; thread-safe (each message is one datagram)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_name = env.get("NOTIFY_SOCKET") or None
        self._socket: socket.socket | None = None
        if self.socket_name is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def active(self) -> bool:
        return self._socket is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``KEY=value`` each) as one message; False if there is no socket or it failed."""
        if self._socket is None or self.socket_name is None:
            return False
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        try:
            self._socket.sendto(message, _address(self.socket_name))
        except OSError as error:
            # systemd gone (shutdown) or the socket full: nothing the daemon could do about it.
            log.debug("could not notify systemd", reason=str(error))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        # systemd 253+ uses MONOTONIC_USEC to tell this reload from an earlier one; 252 ignores it.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between pings (a third of ``WATCHDOG_USEC``), or None when systemd asks for none.

    ``WATCHDOG_PID`` names the process meant; a child that inherited the variables must not ping.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000 / 3
