"""HTTP plumbing of the sandbox: request/response types, a route table, fault injection, a request log,
and the ``/_sandbox/`` control endpoints.

Theory of operation
-------------------
One ``ThreadingHTTPServer`` on one port serves every simulated vendor. Vendor modules add routes to a
``Router`` (method + path regex → handler); a handler gets a ``Request`` and returns a ``Response``. The
server stays ignorant of vendors, so more of them can be mounted on the same port later.

Connections are HTTP/1.1 keep-alive, as the daemon's client expects. Two rules keep that safe:

* every response carries ``Content-Length`` (a streamed file too), so the client always knows where it
  ends;
* a request body is always consumed before the next request is read. A handler that answers without
  reading the body (an S3 refusal, an injected fault) leaves the server to drain it, up to ``DRAIN_LIMIT``;
  past that the connection is closed with a lingering close, so the client still reads the answer
  instead of meeting a reset that discards it.

Fault injection runs before routing: the next matching fault either answers in the route's place, delays
it, resets the TCP connection (at once, or after reading part of the request body), or lets the route do
its work and holds the answer back ("late": the vendor acted, the client gave up waiting). The request
log records method, path (never the query: presigned URLs carry signatures), status and time.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

CONTROL_PREFIX = "/_sandbox/"
DRAIN_LIMIT = 64 * 1024 * 1024  # beyond this an unread body is not worth reading: close the connection
MAX_JSON_BODY = 16 * 1024 * 1024
SOCKET_TIMEOUT = 60.0  # a client that stalls mid-body this long counts as gone
LINGER_SECONDS = 2.0
COPY_SIZE = 1024 * 1024


# -- request and response ---------------------------------------------------------------------------------


class BadRequest(Exception):
    """A body that cannot be parsed: the route answers 400 in its own dialect."""


class Request:
    """One request, with its body readable incrementally (Content-Length or chunked framing)."""

    def __init__(
        self, handler: BaseHTTPRequestHandler, method: str, raw_path: str, query_string: str
    ) -> None:
        self.method = method
        self.raw_path = raw_path  # as on the wire: what SigV4 signs and what the log and faults see
        self.path = unquote(raw_path)  # what routes match against
        self.query_string = query_string
        self.headers = handler.headers
        self.params: dict[str, str] = {}
        self.truncated = False  # the body ended (EOF, reset, timeout) before its declared length
        self.bad_framing = False
        self._rfile = handler.rfile
        self._chunk_left = 0

        encoding = self.headers.get("Transfer-Encoding")
        self.chunked = encoding is not None and encoding.strip().lower() == "chunked"
        if encoding is not None and not self.chunked:
            self.bad_framing = True
        self.content_length: int | None = None
        length = self.headers.get("Content-Length")
        if length is not None and not self.chunked:
            try:
                self.content_length = int(length)
                if self.content_length < 0:
                    raise ValueError(length)
            except ValueError:
                self.bad_framing = True
                self.content_length = 0
        self._remaining = self.content_length or 0
        self._done = self.bad_framing or (not self.chunked and self._remaining == 0)

    # headers

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return None if value is None else _redecode(value)

    def header_map(self) -> dict[str, str]:
        """Lower-case name → value (repeated headers joined with ','), values decoded as UTF-8."""
        merged: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            merged[key] = f"{merged[key]},{_redecode(value)}" if key in merged else _redecode(value)
        return merged

    # body

    @property
    def body_done(self) -> bool:
        return self._done

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of body; b"" at its end. Sets ``truncated`` if the client quit early."""
        if self._done:
            return b""
        try:
            if self.chunked:
                data = self._read_chunked(size)
            else:
                data = self._rfile.read(min(size, self._remaining))
                self._remaining -= len(data)
                if not data:
                    self._quit()
                elif self._remaining == 0:
                    self._done = True
        except (OSError, ValueError):  # reset, timeout, closed file, bad chunk size
            self._quit()
            return b""
        return data

    def _quit(self) -> None:
        self.truncated = True
        self._done = True

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            if not line.endswith(b"\n"):
                self._quit()
                return b""
            length = int(line.split(b";", 1)[0].strip(), 16)
            if length == 0:
                while self._rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers: not used by anyone here
                self._done = True
                return b""
            self._chunk_left = length
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            self._quit()
            return b""
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(16)  # the CRLF that closes the chunk
        return data

    def body(self, limit: int = MAX_JSON_BODY) -> bytes:
        parts: list[bytes] = []
        total = 0
        while chunk := self.read(min(COPY_SIZE, limit + 1 - total)):
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise BadRequest("body too large")
        if self.truncated:
            raise BadRequest("incomplete body")
        return b"".join(parts)

    def json(self) -> Any:
        try:
            return json.loads(self.body() or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadRequest(str(error)) from None

    def drain(self, limit: int) -> bool:
        """Read and drop what is left of the body, at most ``limit`` bytes. True if it all came in."""
        drained = 0
        while drained <= limit and (chunk := self.read(COPY_SIZE)):
            drained += len(chunk)
        return self._done and not self.truncated


def _redecode(value: str) -> str:
    # http.server decodes header bytes as Latin-1; clients send UTF-8 (e.g. a file name in x-amz-meta-*).
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # when set, the body is streamed from this file (file_size bytes)
    file_size: int = 0
    close: bool = False  # close the connection after this answer


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def text_response(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, text.encode(), {"Content-Type": content_type})


# -- routing ----------------------------------------------------------------------------------------------

RouteHandler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str  # "*" matches any method
    pattern: re.Pattern[str]
    handler: RouteHandler


class Router:
    """An ordered route table: the first route whose regex matches the decoded path and whose method
    fits wins. Named groups become ``request.params``."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, method: str, pattern: str, handler: RouteHandler) -> None:
        self._routes.append(Route(method.upper(), re.compile(pattern), handler))

    def dispatch(self, request: Request) -> Response:
        path_matched = False
        for route in self._routes:
            match = route.pattern.match(request.path)
            if match is None:
                continue
            if route.method not in ("*", request.method):
                path_matched = True
                continue
            request.params = {k: v for k, v in match.groupdict().items() if v is not None}
            return route.handler(request)
        if path_matched:
            return text_response(405, "Method Not Allowed\n")
        return text_response(404, "Not Found\n")


# -- faults and the request log ---------------------------------------------------------------------------

FAULT_ACTIONS = ("respond", "reset", "delay", "late")


@dataclass
class Fault:
    method: str
    path_regex: re.Pattern[str]
    status: int
    count: int
    headers: dict[str, str]
    body: str
    delay: float
    action: str
    after_bytes: int = 0  # "reset": body bytes to read first, so the reset lands mid-upload

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path_regex": self.path_regex.pattern,
            "status": self.status,
            "count": self.count,
            "headers": dict(self.headers),
            "body": self.body,
            "delay": self.delay,
            "action": self.action,
            "after_bytes": self.after_bytes,
        }


class FaultBook:
    """Pending faults, consumed first-added-first. Thread-safe: handlers run on many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
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
        if action not in FAULT_ACTIONS:
            raise ValueError(f"action must be one of {', '.join(FAULT_ACTIONS)}, not {action!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if after_bytes < 0:
            raise ValueError("after_bytes must not be negative")
        fault = Fault(
            method.upper(),
            re.compile(path_regex),
            status,
            count,
            dict(headers or {}),
            body,
            float(delay),
            action,
            int(after_bytes),
        )
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.method in ("*", method) and fault.path_regex.search(path):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.describe() for fault in self._faults]


class RequestLog:
    def __init__(self, echo: bool = False) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._echo = echo

    def add(self, method: str, path: str, status: int) -> None:
        # ``path`` never holds a query string: that is where presigned URLs keep their signatures.
        entry = {"method": method, "path": path, "status": status, "at": time.time()}
        with self._lock:
            self._entries.append(entry)
        if self._echo:
            shown = status or "reset"
            print(f"{time.strftime('%H:%M:%S')} {method} {path} -> {shown}", file=sys.stderr, flush=True)

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._entries]


# -- the server -------------------------------------------------------------------------------------------


class App(Protocol):
    router: Router
    faults: FaultBook
    log: RequestLog


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    timeout = SOCKET_TIMEOUT
    server: SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus the client's delayed
        # ACK would add ~40 ms to every keep-alive exchange.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the default prints the request line, and with it a presigned URL's signature."""

    def _dispatch(self) -> None:
        app = self.server.app
        target = urlsplit(self.path)
        raw_path = target.path or "/"
        request = Request(self, self.command, raw_path, target.query)
        if request.bad_framing:
            self._answer(request, text_response(400, "Bad Request: unreadable body framing\n"))
            return

        fault = None if raw_path.startswith(CONTROL_PREFIX) else app.faults.take(self.command, raw_path)
        if fault is not None and fault.action == "reset":
            self._read_some(request, fault.after_bytes)
            app.log.add(self.command, raw_path, 0)
            self._reset()
            return
        if fault is not None and fault.delay > 0 and fault.action != "late":
            time.sleep(fault.delay)
        if fault is not None and fault.action == "respond":
            response = Response(fault.status, fault.body.encode(), dict(fault.headers))
        else:
            try:
                response = app.router.dispatch(request)
            except Exception as error:  # a bug in a simulator must not kill the connection silently
                print(f"sandbox: {self.command} {raw_path} failed: {error!r}", file=sys.stderr)
                response = json_response(500, {"error": "Internal Server Error"})
        if fault is not None and fault.action == "late":
            # The route has done its work (a record written, a ticket made); only the answer is slow.
            time.sleep(fault.delay)
        self._answer(request, response)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _answer(self, request: Request, response: Response) -> None:
        # Consume what the route left of the body first; answering then resetting could lose the answer.
        unread_left = not request.body_done and not request.drain(DRAIN_LIMIT)
        if unread_left or request.truncated or request.bad_framing or response.close:
            self.close_connection = True
        length = response.file_size if response.file is not None else len(response.body)
        # Logged before the answer goes out, so a client that reads the log right after it sees the entry.
        self.server.app.log.add(self.command, request.raw_path, response.status)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(length))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                if response.file is not None:
                    with response.file.open("rb") as source:
                        shutil.copyfileobj(source, self.wfile, COPY_SIZE)
                else:
                    self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:  # the client has gone; nothing more to say to it
            self.close_connection = True
            return
        if unread_left:
            self._linger()

    def _linger(self) -> None:
        """Half-close, then read and drop for a moment so the client reads our answer before any reset."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline and self.connection.recv(COPY_SIZE):
                pass
        except OSError:
            pass

    @staticmethod
    def _read_some(request: Request, count: int) -> int:
        """Read (and drop) up to ``count`` bytes of the body: how far an upload got before its reset."""
        received = 0
        while received < count:
            data = request.read(min(COPY_SIZE, count - received))
            if not data:
                break
            received += len(data)
        return received

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), reading nothing more."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The buffered reader holds a reference to the socket; the fd only closes when both let go.
        self.rfile.close()
        self.connection.close()


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def close_connections(self) -> None:
        """Wake keep-alive handler threads blocked on a read, so stop() leaves nothing serving."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # clients that hang up mid-exchange are expected here (reset faults, killed daemons)
        super().handle_error(request, client_address)


# -- control endpoints ------------------------------------------------------------------------------------


class Controls(Protocol):
    """What the control endpoints need from the sandbox that composes the vendors."""

    def state(self) -> dict[str, Any]: ...
    def attachment_blob(self, attachment_id: str) -> tuple[Path, int] | None: ...
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
    ) -> None: ...
    def clear_faults(self) -> None: ...
    def configure(self, settings: dict[str, Any]) -> dict[str, Any]: ...
    def add_fulcrum_record(
        self, record_id: str, form_id: str, form_values: dict[str, Any] | None
    ) -> None: ...
    def describe(self) -> str: ...


def _control_error(message: str, status: int = 400) -> Response:
    return json_response(status, {"error": message})


def register_control_routes(
    router: Router, controls: Controls, requests: Callable[[], list[dict[str, Any]]], faults: FaultBook
) -> None:
    """``/_sandbox/...``: inspect state and steer the sandbox over HTTP (for the demo and for a person).
    No auth: the sandbox is meant for 127.0.0.1."""

    def index(_: Request) -> Response:
        return text_response(200, controls.describe())

    def state(_: Request) -> Response:
        return json_response(200, controls.state())

    def attachment_bytes(request: Request) -> Response:
        blob = controls.attachment_blob(request.params["id"])
        if blob is None:
            return _control_error("no uploaded bytes for this attachment", 404)
        path, size = blob
        return Response(200, headers={"Content-Type": "application/octet-stream"}, file=path, file_size=size)

    def add_fault(request: Request) -> Response:
        try:
            spec = request.json()
            if not isinstance(spec, dict):
                raise BadRequest("expected a JSON object")
            options = dict(spec)
            controls.add_fault(str(options.pop("method")), str(options.pop("path_regex")), **options)
        except (BadRequest, KeyError, TypeError, ValueError, re.error) as error:
            return _control_error(f"bad fault: {error}")
        return json_response(201, {"faults": faults.pending()})

    def list_faults(_: Request) -> Response:
        return json_response(200, {"faults": faults.pending()})

    def clear_faults(_: Request) -> Response:
        controls.clear_faults()
        return json_response(200, {"faults": []})

    def configure(request: Request) -> Response:
        try:
            settings = request.json()
            if not isinstance(settings, dict):
                raise BadRequest("expected a JSON object")
            return json_response(200, controls.configure(settings))
        except (BadRequest, TypeError, ValueError) as error:
            return _control_error(f"bad config: {error}")

    def add_record(request: Request) -> Response:
        try:
            spec = request.json()
            if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
                raise BadRequest('expected {"id": ..., "form_id": ..., "form_values": {...}}')
            form_id = str(spec.get("form_id", "form-1"))
            controls.add_fulcrum_record(spec["id"], form_id, spec.get("form_values"))
        except (BadRequest, TypeError, ValueError) as error:
            return _control_error(f"bad record: {error}")
        return json_response(201, {"id": spec["id"]})

    def request_log(_: Request) -> Response:
        return json_response(200, {"requests": requests()})

    router.add("GET", r"^/$", index)
    router.add("GET", r"^/_sandbox/state$", state)
    router.add("GET", r"^/_sandbox/attachments/(?P<id>[^/]+)/bytes$", attachment_bytes)
    router.add("GET", r"^/_sandbox/faults$", list_faults)
    router.add("POST", r"^/_sandbox/faults$", add_fault)
    router.add("DELETE", r"^/_sandbox/faults$", clear_faults)
    router.add("POST", r"^/_sandbox/config$", configure)
    router.add("POST", r"^/_sandbox/fulcrum/records$", add_record)
    router.add("GET", r"^/_sandbox/requests$", request_log)
