"""The endpoint's server: waitress, in one thread of the daemon, with two threads for requests.

Waitress parses HTTP (request lines, headers, chunked bodies, limits on their sizes) so that no code of
ours does; it is pure Python with no dependencies of its own, kept up by the Pylons project, and its
event loop sleeps in ``poll`` between requests (one wake-up a second at idle, for its housekeeping).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import structlog
from waitress.server import create_server

from hotfolder.web.app import StatusApp

log = structlog.get_logger("hotfolder.web")
# "Task queue depth is 1" whenever a browser opens two connections at once: not worth a warning.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


class EndpointServer:
    def __init__(self, host: str, port: int) -> None:
        # Bound now, so the port is known (and a taken port is an error at start, not later).
        self._server: Any = create_server(
            self._dispatch, host=host, port=port, threads=2, ident="hotfolder", expose_tracebacks=False,
            max_request_body_size=1024 * 1024, max_request_header_size=64 * 1024, connection_limit=50,
            channel_timeout=30, clear_untrusted_proxy_headers=True,
        )
        self._app: StatusApp | None = None
        self._thread = threading.Thread(target=self._run, name="hotfolder-http", daemon=True)
        self.host = host

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def _dispatch(self, environ: dict[str, Any], start_response: Any) -> Any:
        if self._app is None:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"starting\n"]
        return self._app(environ, start_response)

    def start(self, app: StatusApp) -> None:
        self._app = app
        self._thread.start()
        shown = f"[{self.host}]" if ":" in self.host else self.host
        log.info("status page and metrics", url=f"http://{shown}:{self.port}/")

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # closing the sockets under the loop ends it with an error on some platforms
            log.debug("http server loop ended", exc_info=True)

    def _close_everything(self) -> None:
        """The listening socket and every open connection (a browser keeps one alive): the loop ends
        when none is left."""
        for dispatcher in list(self._server._map.values()):
            dispatcher.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            # Closed by the loop's own thread, woken now rather than at its next second.
            self._server.trigger.pull_trigger(self._close_everything)
        else:
            self._close_everything()
        self._server.task_dispatcher.shutdown(timeout=5)
        if self._thread.is_alive():
            self._thread.join(5)
