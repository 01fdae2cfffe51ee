"""The endpoint's WSGI application: routes, the guard's checks in order, and the page's actions.

Every request is checked in this order: its Host (else 421), its token (else 401, with the login form
for a browser), and for a POST its Origin and CSRF token (else 403). What the daemon does on a button
goes through :class:`Controls`, which the service builds: the app knows no runner and no watcher.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from hotfolder.health import Verdict
from hotfolder.web.guard import Guard
from hotfolder.web.page import CONTENT_SECURITY_POLICY, login_page, status_page

MAX_FORM_BYTES = 16 * 1024
Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Headers = list[tuple[str, str]]

_SECURITY_HEADERS: Headers = [
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),  # no-referrer would make the browser send "Origin: null" on our own forms
    ("Cache-Control", "no-store"),
]


@dataclass(frozen=True)
class Controls:
    """What the endpoint may ask of the daemon (built by the service)."""

    report: Callable[[], dict[str, Any]]
    metrics: Callable[[], bytes]
    metrics_content_type: str
    alive: Callable[[], Verdict]
    ready: Callable[[], Verdict]
    pause: Callable[[str], bool]  # False: no such target
    resume: Callable[[str], bool]
    rescan: Callable[[], None]
    retry_job: Callable[[int], bool]  # False: its file is no longer in failed/
    retry_target: Callable[[str], int]  # how many files went back
    version: str


@dataclass(frozen=True)
class Response:
    status: str
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _html(status: str, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status, text.encode(), headers=headers)


def _json(status: str, payload: object) -> Response:
    return Response(status, json.dumps(payload, ensure_ascii=False).encode(), "application/json")


def _plain(status: str, text: str) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8")


def _see_other(where: str, *headers: tuple[str, str]) -> Response:
    return Response("303 See Other", b"", headers=(("Location", where), *headers))


class StatusApp:
    def __init__(self, guard: Guard, controls: Controls) -> None:
        self.guard = guard
        self.controls = controls
        self._pages: dict[str, Callable[[Environ], Response]] = {
            "/": self._page, "/api/status": self._status, "/metrics": self._metrics,
            "/healthz": self._alive, "/readyz": self._ready,
        }
        self._actions: dict[str, Callable[[dict[str, str]], Response]] = {
            "/action/pause": self._pause, "/action/resume": self._resume, "/action/rescan": self._rescan,
            "/action/retry": self._retry, "/action/retry-target": self._retry_target,
        }

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        response = self._respond(environ)
        headers: Headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                            *_SECURITY_HEADERS, *response.headers]
        start_response(response.status, headers)
        return [response.body] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

    def _respond(self, environ: Environ) -> Response:
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
        if not self.guard.host_allowed(environ):
            return _plain("421 Misdirected Request", "This endpoint does not answer to that Host name.\n")
        if method == "POST":
            return self._post(path, environ)
        if method not in ("GET", "HEAD"):
            return _plain("405 Method Not Allowed", "GET, HEAD or POST only.\n")
        handler = self._pages.get(path)
        if handler is None:
            return _plain("404 Not Found", "Not found.\n")
        if self.guard.needs_token(path) and not self.guard.authenticated(environ):
            if path == "/":
                return _html("401 Unauthorized", login_page())
            return _plain("401 Unauthorized", "A token is needed (Authorization: Bearer <token>).\n")
        return handler(environ)

    def _post(self, path: str, environ: Environ) -> Response:
        if not self.guard.origin_allowed(environ):
            return _plain("403 Forbidden", "Refused: this request did not come from this page (Origin).\n")
        form = _read_form(environ)
        if path == "/login":
            if not self.guard.token_matches(form.get("token", "")):
                return _html("403 Forbidden", login_page(wrong=True))
            return _see_other("/", ("Set-Cookie", self.guard.session_cookie()))
        action = self._actions.get(path)
        if action is None:
            return _plain("404 Not Found", "Not found.\n")
        if not self.guard.authenticated(environ):
            return _plain("401 Unauthorized", "A token is needed.\n")
        if not self.guard.csrf_matches(form.get("csrf", "")):
            return _plain("403 Forbidden", "Refused: the form's CSRF token is missing or wrong.\n")
        return action(form)

    # -- pages ---------------------------------------------------------------------------------

    def _page(self, environ: Environ) -> Response:
        note = parse_qs(environ.get("QUERY_STRING", "")).get("note", [None])[0]
        return _html("200 OK", status_page(self.controls.report(), self.guard.csrf, note=note,
                                           version=self.controls.version))

    def _status(self, environ: Environ) -> Response:
        return _json("200 OK", self.controls.report())

    def _metrics(self, environ: Environ) -> Response:
        return Response("200 OK", self.controls.metrics(), self.controls.metrics_content_type)

    def _alive(self, environ: Environ) -> Response:
        return _verdict(self.controls.alive())

    def _ready(self, environ: Environ) -> Response:
        return _verdict(self.controls.ready())

    # -- actions (POST, checked) ---------------------------------------------------------------

    def _pause(self, form: dict[str, str]) -> Response:
        return _see_other("/?note=paused" if self.controls.pause(form.get("target", "")) else "/?note=unknown-target")

    def _resume(self, form: dict[str, str]) -> Response:
        return _see_other("/?note=resumed" if self.controls.resume(form.get("target", "")) else "/?note=unknown-target")

    def _rescan(self, form: dict[str, str]) -> Response:
        self.controls.rescan()
        return _see_other("/?note=rescan")

    def _retry(self, form: dict[str, str]) -> Response:
        try:
            job = int(form.get("job", ""))
        except ValueError:
            return _plain("400 Bad Request", "job must be a job number.\n")
        return _see_other("/?note=retried" if self.controls.retry_job(job) else "/?note=retry-gone")

    def _retry_target(self, form: dict[str, str]) -> Response:
        moved = self.controls.retry_target(form.get("target", ""))
        return _see_other("/?note=retried" if moved else "/?note=retry-gone")


def _verdict(verdict: Verdict) -> Response:
    return _json("200 OK" if verdict.ok else "503 Service Unavailable", verdict.body())


def _read_form(environ: Environ) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}
