"""Who may do what on the endpoint, as the anchors of such pages learnt it the hard way.

* **A token** from a file made at the first start (mode 0600, its path logged once, never its value). A
  browser trades it once, on the login form, for a cookie (HttpOnly, SameSite=Strict) whose value is
  derived from the token, so changing the token ends every session. Scripts send it as a Bearer header.
* **The Host header** must name this endpoint (its listen address, loopback, or ``http.allowed_hosts``)
  with its port: a page on another site cannot reach the endpoint through DNS rebinding.
* **Changes are POSTs** that carry an ``Origin`` of this endpoint and the page's CSRF token.
* On loopback, ``/metrics``, ``/healthz`` and ``/readyz`` are open, as a scraper or a supervisor on the
  machine expects; on any other address every path needs the token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("hotfolder.web")

OPEN_ON_LOOPBACK = frozenset({"/metrics", "/healthz", "/readyz"})
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def load_or_make_token(path: Path) -> str:
    """The token in ``path``; made (256 random bits, mode 0600) if the file does not exist yet."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.warning("made the status page's token; open the page and give it once", token_file=str(path))
        return token
    if not token:
        raise ValueError(f"the token file {path} is empty")
    if path.stat().st_mode & 0o077:
        log.warning("the status page's token file can be read by others than its owner: chmod 600 it",
                    token_file=str(path))
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _derive(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


class Guard:
    def __init__(self, token: str, listen_host: str, port: int, allowed_hosts: Iterable[str]) -> None:
        self._token = token
        self.port = port
        self.cookie_name = f"hotfolder_{port}"  # cookies ignore ports: one name per endpoint on a host
        self._session = _derive(token, "session")
        self.csrf = _derive(token, "csrf")
        self.loopback = is_loopback(listen_host)
        names = {*(_LOOPBACK_NAMES if self.loopback else ()), *allowed_hosts}
        if listen_host not in ("0.0.0.0", "::"):
            names.add(f"[{listen_host}]" if ":" in listen_host else listen_host)
        self._hosts = frozenset(f"{name.lower()}:{port}" for name in names)

    # -- the checks, each on a WSGI environ --------------------------------------------------------

    def host_allowed(self, environ: Mapping[str, Any]) -> bool:
        host = str(environ.get("HTTP_HOST", "")).lower()
        return host in self._hosts

    def origin_allowed(self, environ: Mapping[str, Any]) -> bool:
        """A POST comes from a page of this endpoint: its Origin is http://<the Host it was sent to>."""
        origin = str(environ.get("HTTP_ORIGIN", ""))
        return bool(origin) and hmac.compare_digest(origin.lower(), f"http://{environ.get('HTTP_HOST', '')}".lower())

    def needs_token(self, path: str) -> bool:
        return not (self.loopback and path in OPEN_ON_LOOPBACK)

    def authenticated(self, environ: Mapping[str, Any]) -> bool:
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        if header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip().encode(), self._token.encode()):
            return True
        try:
            cookie = SimpleCookie(str(environ.get("HTTP_COOKIE", "")))
        except CookieError:
            return False
        morsel = cookie.get(self.cookie_name)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), self._session.encode())

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.strip().encode(), self._token.encode())

    def csrf_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.csrf.encode())

    def session_cookie(self) -> str:
        return f"{self.cookie_name}={self._session}; Path=/; HttpOnly; SameSite=Strict"
