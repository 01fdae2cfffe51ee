"""The webhook channel: each alert is one JSON POST, signed when the webhook has a secret.

Headers: ``X-Hotfolder-Alert-Id`` (the alert's stable id, also in the body: a receiver drops repeats
by it), ``X-Hotfolder-Event`` (its kind) and, with a secret, ``X-Hotfolder-Signature:
sha256=<hex>``, the HMAC-SHA256 of the exact body bytes under the secret. Any 2xx answer delivers it;
anything else (a redirect included: it could carry the alert elsewhere) is an attempt that failed.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse

import httpx

from hotfolder.alerts.channels import DeliveryError, tls_context
from hotfolder.alerts.options import WebhookSettings
from hotfolder.alerts.outbox import Delivery
from hotfolder.logsetup import redact

SIGNATURE_HEADER = "X-Hotfolder-Signature"
ID_HEADER = "X-Hotfolder-Alert-Id"
KIND_HEADER = "X-Hotfolder-Event"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    def __init__(self, settings: WebhookSettings, user_agent: str) -> None:
        self.settings = settings
        self.name = f"webhook:{settings.name}"
        self.verifies_tls = settings.verify_tls
        verify = tls_context(settings.verify_tls, settings.ca_file) if settings.url.startswith("https:") else True
        self._client = httpx.Client(timeout=settings.timeout, verify=verify, follow_redirects=False)
        self._headers = {header.name: header.value for header in settings.headers}
        self._headers["User-Agent"] = user_agent

    def describe(self) -> str:
        host = urllib.parse.urlsplit(self.settings.url).hostname or "?"
        return f"webhook {self.settings.name} (host {host})"

    def send(self, delivery: Delivery) -> None:
        body = delivery.body.encode()
        headers = {**self._headers, "Content-Type": "application/json", ID_HEADER: delivery.alert_id,
                   KIND_HEADER: delivery.kind}
        if self.settings.secret:
            headers[SIGNATURE_HEADER] = signature(self.settings.secret, body)
        try:
            response = self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            # The exception's text may hold the URL, a credential for some receivers: redacted, never the URL.
            raise DeliveryError(redact(f"{type(error).__name__}: {error}")) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"the receiver answered HTTP {response.status_code}")

    def close(self) -> None:
        self._client.close()
