"""The vendors' HTTP client: no cookie is kept from one call to the next."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from hotfolder.config import TargetSettings
from hotfolder.service import make_client


class _CookieSetter(BaseHTTPRequestHandler):
    """Answers every GET with a Set-Cookie and remembers the Cookie header each request carried."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Cookie"))
        self.send_response(200)
        self.send_header("Set-Cookie", "session=abc123; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def cookie_server() -> Iterator[str]:
    _CookieSetter.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieSetter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_cookie_set_by_a_vendor_is_never_sent_back(cookie_server: str) -> None:
    target = TargetSettings(name="t", vendor="fulcrum", url=cookie_server, verify_tls=True, timeout=10,
                            max_requests_per_second=None, max_concurrent_uploads=None, options={})
    with make_client(target, workers=1) as client:
        for _ in range(3):
            assert client.get("/api").status_code == 200
        assert list(client.cookies.jar) == []
    assert _CookieSetter.seen == [None, None, None]
