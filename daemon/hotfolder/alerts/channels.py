"""What the alert channels share: how one is told an attempt failed, and the TLS context they verify with."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from hotfolder.alerts.outbox import Delivery


class DeliveryError(Exception):
    """One attempt to hand an alert to a channel failed; the message (redacted) says why."""


class Channel(Protocol):
    name: str  # the key its deliveries are kept under in the outbox: webhook:<name> or email
    verifies_tls: bool

    def describe(self) -> str:
        """Where it sends, for the log: never a credential (a webhook's URL may be one)."""

    def send(self, delivery: Delivery) -> None:
        """Hand one alert over, or raise DeliveryError."""

    def close(self) -> None: ...


def tls_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """The system's trust store, or ``ca_file`` (a private CA, a self-signed receiver), or no check at all."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
