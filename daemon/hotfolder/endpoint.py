"""Wiring of the HTTP endpoint (``http:`` in the config): its token, server, metrics, health and buttons.

The service builds one :class:`Endpoint` when the config asks for it. Metrics and the live state listen
to the event stream; the buttons act through the runner's and watcher's public calls (pause, resume,
rescan) and by moving files from failed/ back into the inbox, where the watcher finds them again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from hotfolder import outcomes
from hotfolder.config import Settings, http_token_file
from hotfolder.events import EventBus
from hotfolder.health import Health
from hotfolder.journal import JournalBackend
from hotfolder.live import LiveState
from hotfolder.liveness import Liveness
from hotfolder.logsetup import register_secret
from hotfolder.metrics import Metrics
from hotfolder.pipeline import State
from hotfolder.runner import Runner
from hotfolder.statusreport import build_report, not_ready, waiting_file
from hotfolder.watch.watcher import Watcher
from hotfolder.web.app import Controls, StatusApp
from hotfolder.web.guard import Guard, is_loopback, load_or_make_token
from hotfolder.web.server import EndpointServer

log = structlog.get_logger("hotfolder.web")

PAUSE_REASON = "paused on the status page"


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("hotfolder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Endpoint:
    def __init__(self, settings: Settings, journal: JournalBackend, live: LiveState, events: EventBus) -> None:
        http = settings.http
        assert http is not None
        self.settings = settings
        self._journal = journal
        self._live = live
        host, port = http.listen
        if not is_loopback(host):
            log.warning("the status page listens beyond this machine: every path needs the token",
                        listen=f"{host}:{port}")
        self.token = load_or_make_token(http_token_file(settings))
        register_secret(self.token)
        self.server = EndpointServer(host, port)  # bound now: a port in use stops the start here
        self.guard = Guard(self.token, host, self.server.port, http.allowed_hosts)
        self.metrics = Metrics(settings.targets, journal, live, self._waiting_reasons, version())
        events.subscribe(self.metrics)
        self._first_rescan_done = False

    @property
    def port(self) -> int:
        return self.server.port

    def _waiting_reasons(self) -> list[str]:
        return [w["reason"] for w in not_ready(waiting_file(self.settings))]

    def report(self) -> dict[str, Any]:
        return build_report(self.settings, self._journal, self._live.snapshot(), not_ready(waiting_file(self.settings)))

    def start(self, runner: Runner, watcher: Watcher, liveness: Liveness) -> None:
        """After the watcher's first rescan: the endpoint answers from then on."""
        self._first_rescan_done = True
        http = self.settings.http
        assert http is not None
        health = Health(
            live=self._live, journal=self._journal, journal_path=self.settings.journal, inbox=self.settings.inbox,
            workers_missing=runner.workers_missing, stuck_threads=liveness.stuck,
            first_rescan_done=lambda: self._first_rescan_done, stuck_after=http.stuck_after,
            paused_limit=http.paused_limit,
        )
        controls = Controls(
            report=self.report,
            metrics=self.metrics.exposition,
            metrics_content_type=CONTENT_TYPE_LATEST,
            alive=health.alive,
            ready=health.ready,
            pause=lambda target: self._known(target) and _said(runner.hold(target, PAUSE_REASON)),
            resume=lambda target: self._known(target) and _said(runner.release(target)),
            rescan=lambda: _in_background(watcher.rescan, "hotfolder-rescan-now"),
            retry_job=self.retry_job,
            retry_target=self.retry_target,
            version=f"hotfolder {version()}",
        )
        self.server.start(StatusApp(self.guard, controls))

    def stop(self) -> None:
        self.server.stop()

    def reloaded(self, settings: Settings) -> None:
        """A reload was applied: the page and the metrics show the targets it left."""
        self.settings = settings
        self.metrics.targets_changed(settings.targets)

    def _known(self, target: str) -> bool:
        return target in self.settings.targets

    # -- the Retry buttons -----------------------------------------------------------------------

    def retry_job(self, job_id: int) -> bool:
        """Move a failed job's file back to the inbox path it came from; False if it is not in failed/."""
        try:
            job = self._journal.get(job_id)
        except KeyError:
            return False
        where = Path(job.outcome_path) if job.outcome_path else None
        back = _inside(self.settings.inbox, job.relpath)
        if (job.state is not State.FAILED or where is None or back is None
                or not where.is_relative_to(self.settings.failed) or where.is_symlink() or not where.is_file()):
            return False
        final = outcomes.move_back_to_inbox(where, back)
        log.info("retry from the status page", job=job.id, file=job.relpath, moved_to=str(final))
        return True

    def retry_target(self, target: str) -> int:
        """Move every file of ``failed/<target>/`` back to the inbox; how many went."""
        folder = _inside(self.settings.failed, target) if "/" not in target else None
        if folder is None or folder.is_symlink() or not folder.is_dir():
            return 0
        moved = 0
        for path in outcomes.failed_files(folder):
            outcomes.move_back_to_inbox(path, self.settings.inbox / path.relative_to(self.settings.failed))
            moved += 1
        log.info("retry of a whole target from the status page", target=target, files=moved)
        return moved


def _inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` if that stays inside ``root`` (no absolute path, no ``..``), else None."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".", "") for p in parts):
        return None
    return root.joinpath(*parts)


def _said(_changed: bool) -> bool:
    """A pause of a paused target (or a resume of a running one) is done all the same."""
    return True


def _in_background(work: Callable[[], None], name: str) -> None:
    threading.Thread(target=work, name=name, daemon=True).start()
