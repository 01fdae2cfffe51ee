"""A local simulator of the vendors hotfolder uploads to, and of their S3, on one loopback port.

    with Sandbox(tmp_path) as sb:
        sb.fulcrum.add_record("rec-1")
        ... point the daemon at sb.url, token "sandbox-token" ...
        assert sb.fulcrum.attachment_bytes(attachment_id) == data

It imports nothing from the rest of ``daemon``: the daemon is tested against it, so it must not share
the daemon's ideas of how the vendors behave. ``Sandbox`` only composes the parts: the HTTP server
(``server``), the S3 look-alike (``s3``) and one module per vendor (``fulcrum``; more mount the same way:
build the service, ``register`` its routes on the router).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .espocrm import EspoCRMService
from .fulcrum import FulcrumService
from .s3 import S3Service, S3Settings, SigV4
from .saferme import SaferMeService
from .server import FaultBook, RequestLog, Router, SandboxHTTPServer, register_control_routes
from .visibuild import VisibuildService

__all__ = ["Sandbox"]

_CONFIG_KEYS = {"presign_expires": int, "strict_meta": bool, "max_object_size": int}


class _RecordingSigV4(SigV4):
    """SigV4 that remembers every signature it computes (presigned URLs, POST policies), so a test can
    search the daemon's logs and files for the credentials this sandbox handed out."""

    def __init__(self) -> None:
        super().__init__()
        self._issued: set[str] = set()
        self._issued_lock = threading.Lock()

    def signature(self, string_to_sign: str, datestamp: str) -> str:
        value = super().signature(string_to_sign, datestamp)
        with self._issued_lock:
            self._issued.add(value)
        return value

    def issued(self) -> set[str]:
        with self._issued_lock:
            return set(self._issued)


class Sandbox:
    """The simulator: start it, point the daemon at ``url``, inspect and steer it from Python or HTTP."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        fulcrum_tokens: Iterable[str] = ("sandbox-token",),
        presign_expires: int = 900,
        strict_meta: bool = False,
        max_object_size: int = 5 * 1024**3,
        echo_requests: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.router = Router()
        self.faults = FaultBook()
        self.log = RequestLog(echo=echo_requests)
        self._signer = _RecordingSigV4()
        self.s3 = S3Service(
            self.data_dir / "s3",
            S3Settings(
                presign_expires=presign_expires, max_object_size=max_object_size, strict_meta=strict_meta
            ),
            self._signer,
        )
        self.fulcrum = FulcrumService(self.s3, fulcrum_tokens)
        self.visibuild = VisibuildService(self.s3)
        self.saferme = SaferMeService(self.s3)
        self.espocrm = EspoCRMService(self.s3)
        # Order matters only for overlapping patterns: control first, then S3, then each vendor.
        register_control_routes(self.router, self, self.requests, self.faults)
        self.s3.register(self.router)
        for service in self._vendors():
            service.register(self.router)
        self._server: SandboxHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Listen and serve. After ``stop()``, starting again rebinds the same port (SO_REUSEADDR) and
        keeps every record, blob and fault: the vendor was down for a while, then came back."""
        if self._server is not None:
            return self
        self._server = SandboxHTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        for service in self._vendors():
            service.base_url = self.url
        # A short poll interval keeps stop() quick (shutdown waits for the loop to notice).
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sandbox-http",
            daemon=True,
        )
        self._thread.start()  # the socket already listens (bound in the constructor): clients may connect now
        return self

    def stop(self) -> None:
        """Close the listening socket and every open connection: clients now meet connection refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _vendors(self) -> tuple[Any, ...]:
        return (self.fulcrum, self.visibuild, self.saferme, self.espocrm)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The host root, e.g. ``http://127.0.0.1:8787``; the daemon appends ``/api/v2/...``."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- run-time settings ------------------------------------------------------------------------------

    @property
    def presign_expires(self) -> int:
        return self.s3.settings.presign_expires

    @presign_expires.setter
    def presign_expires(self, seconds: int) -> None:
        self.s3.settings.presign_expires = int(seconds)

    @property
    def strict_meta(self) -> bool:
        return self.s3.settings.strict_meta

    @strict_meta.setter
    def strict_meta(self, value: bool) -> None:
        self.s3.settings.strict_meta = bool(value)

    def configure(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Set any of presign_expires, strict_meta, max_object_size; answer with all of them."""
        unknown = set(settings) - set(_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name, kind in _CONFIG_KEYS.items():
            if name in settings:
                if not isinstance(settings[name], kind) or (kind is int and isinstance(settings[name], bool)):
                    raise TypeError(f"{name} must be {kind.__name__}")
                setattr(self.s3.settings, name, settings[name])
        return {name: getattr(self.s3.settings, name) for name in _CONFIG_KEYS}

    # -- faults and the request log ---------------------------------------------------------------------

    def add_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 500,
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: str = "",
        delay: float = 0.0,
        action: str = "respond",
        after_bytes: int = 0,
    ) -> None:
        """The next ``count`` requests with this method (or "*") whose path, without the query, matches
        ``path_regex`` (re.search) get the fault instead of the real answer. Faults are consumed in the
        order added. ``action``: "respond" (status/headers/body after ``delay``), "reset" (abort the TCP
        connection, after reading ``after_bytes`` of the request body: a reset mid-upload), "delay" (sleep
        ``delay``, then handle the request normally), "late" (handle the request normally, then sleep
        ``delay`` before answering: the vendor acted but the client may have stopped waiting).
        /_sandbox/ paths are never faulted."""
        self.faults.add(
            method,
            path_regex,
            status=status,
            count=count,
            headers=headers,
            body=body,
            delay=delay,
            action=action,
            after_bytes=after_bytes,
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def issued_signatures(self) -> set[str]:
        """Every SigV4 signature this sandbox computed: those in presigned URLs and POST forms it issued."""
        return self._signer.issued()

    def issued_access_tokens(self) -> set[str]:
        """The Visibuild OAuth access tokens issued and not yet expired or revoked."""
        with self.visibuild._lock:
            return set(self.visibuild._grants)

    def requests(self) -> list[dict[str, Any]]:
        """Every request served: {"method", "path" (no query string), "status" (0 = reset), "at"}."""
        return self.log.entries()

    # -- what the control endpoints show ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        blobs = {f"{b.bucket}/{b.key}": {"size": b.size, "md5": b.md5} for b in self.s3.store.all()}
        return {
            "fulcrum": self.fulcrum.state(),
            "visibuild": self.visibuild.state(),
            "saferme": self.saferme.state(),
            "espocrm": self.espocrm.state(),
            "s3": blobs,
            "faults": self.faults.pending(),
            "config": self.configure({}),
        }

    def attachment_blob(self, attachment_id: str) -> tuple[Path, int] | None:
        blob = self.fulcrum.attachment_blob(attachment_id)
        return None if blob is None else (blob.path, blob.size)

    def add_fulcrum_record(self, record_id: str, form_id: str, form_values: dict[str, Any] | None) -> None:
        if form_values is not None and not isinstance(form_values, dict):
            raise TypeError("form_values must be an object")
        self.fulcrum.add_record(record_id, form_id, form_values)

    def describe(self) -> str:
        lines = [
            f"hotfolder sandbox at {self.url}",
            "",
            *(line for service in self._vendors() for line in [*service.describe(), ""]),
            "",
            "Control: GET /_sandbox/state, GET /_sandbox/requests, POST|DELETE /_sandbox/faults,",
            "         POST /_sandbox/config, POST /_sandbox/fulcrum/records,",
            "         GET /_sandbox/attachments/<id>/bytes",
        ]
        return "\n".join(lines) + "\n"
