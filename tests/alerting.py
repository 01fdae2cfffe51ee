"""Real alert receivers on 127.0.0.1 for the alert tests: an HTTP server taking webhooks and an SMTP
server (aiosmtpd) that insists on STARTTLS and a login, with a self-signed certificate made here."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import json
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SMTP_USER = "alerts@example.test"
SMTP_PASSWORD = "smtp-pass-5d8e2a91"  # long enough to be recognisable if it ever leaked
WEBHOOK_SECRET = "hook-secret-0b7c4f3e"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- a webhook receiver --------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """POSTs to any path are recorded; the first ``refuse`` of them are answered 503. Stop and start it
    again on the same port to make it unreachable for a while."""

    port: int = field(default_factory=free_port)
    refuse: int = 0
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/hotfolder"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 503 if receiver.refuse > 0 else 200
                receiver.refuse = max(0, receiver.refuse - 1)
                receiver.requests.append(Received(dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self, kind: str | None = None) -> list[Received]:
        return [r for r in self.requests if r.status == 200 and (kind is None or r.document["kind"] == kind)]


# --- an SMTP server with STARTTLS -----------------------------------------------------------------------


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hotfolder test receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "receiver.crt", folder / "receiver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.content)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


def _check_login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == SMTP_USER \
        and auth_data.password.decode() == SMTP_PASSWORD
    return AuthResult(success=good, handled=False)


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 that wants AUTH with SMTP_USER/SMTP_PASSWORD over TLS: ``tls`` "starttls"
    (required before anything else), "implicit" (TLS from the first byte) or "none" (no TLS, no login)."""

    def __init__(self, folder: Path, port: int | None = None, *, tls: str = "starttls") -> None:
        import ssl

        self.port = port or free_port()
        self.cert_file, key_file = self_signed_certificate(folder)
        self.mailbox = _Mailbox()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, key_file)
        login = {"authenticator": _check_login, "auth_require_tls": True, "auth_required": True}
        kwargs: dict[str, Any] = {
            "starttls": {"tls_context": context, "require_starttls": True, **login},
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; here every byte is TLS already.
            "implicit": {"ssl_context": context, "server_hostname": "localhost", **login, "auth_require_tls": False},
            "none": {},
        }[tls]
        self._running = False
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def messages(self) -> list[EmailMessage]:
        return self.mailbox.messages

    def start(self) -> SmtpReceiver:
        self._controller.start()
        self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._controller.stop()
            self._running = False
