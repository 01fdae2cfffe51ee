"""Shared helpers for end-to-end tests: a sandbox on 127.0.0.1, a config, the daemon in or out of process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hotfolder.config import Settings, load_settings
from hotfolder.journal import Job, Journal
from hotfolder.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token-7c1f9e"  # long enough to be recognisable if it ever leaked into a log
FIELD = "6ca0"


class SiteFolders:
    """Where an installation under ``self.root`` keeps its folders (tests and the kill campaign)."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def journal_path(self) -> Path:
        return self.root / "state" / "journal.db"


@dataclass
class Site(SiteFolders):
    """One test installation: folders, config file and the simulator it talks to."""

    root: Path
    sandbox: Sandbox
    config_path: Path

    def settings(self) -> Settings:
        return load_settings(self.config_path, environ={"FULCRUM_TOKEN": TOKEN})

    def drop(self, record: str, name: str, data: bytes, target: str = "fulcrum") -> Path:
        folder = self.inbox / target / record
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        temp = folder / f".{name}.partial"  # dot-files are ignored, so the rename is the arrival
        temp.write_bytes(data)
        os.replace(temp, path)
        return path

    def jobs(self) -> list[Job]:
        if not self.journal_path.exists():
            return []
        journal = Journal(self.journal_path)
        try:
            return journal.jobs(limit=10_000)
        finally:
            journal.close()

    def attachments_on(self, record: str) -> list[dict[str, Any]]:
        return list(self.sandbox.fulcrum.record(record)["form_values"].get(FIELD) or [])


def write_config(root: Path, sandbox_url: str, **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "inbox": str(root / "inbox"),
        "done": str(root / "done"),
        "failed": str(root / "failed"),
        "journal": str(root / "state" / "journal.db"),
        "log_level": "debug",
        "watch": {"method": "native", "settle": "300ms", "poll_interval": "100ms", "rescan": "1m",
                  # The bytes these tests drop are stand-ins ("%PDF-1.4 " + noise), not whole files of their
                  # format; the readiness tests (test_readiness*, test_shares*) keep the tail test on.
                  "check_complete": False},
        "workers": 4,
        "retry": {"attempts": 6, "backoff": "50ms", "max_backoff": "1s"},
        "targets": {
            "fulcrum": {"vendor": "fulcrum", "url": sandbox_url, "token": "${FULCRUM_TOKEN}", "field": FIELD,
                        "timeout": "10s"},
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def run_once_in_process(site: Site) -> int:
    from hotfolder.service import Daemon

    return Daemon(site.settings()).run_once()


def rewrite_once_sent(site: Site, path: Path, new_bytes: bytes, sent: Callable[[], Any]) -> None:
    """Run the daemon; once ``sent()`` says the file's bytes reached the vendor and the job has
    reached its link (which the test holds with a delay fault), rewrite the file with ``new_bytes``;
    return when every job is finished. Waiting for the link, not only for the vendor's request log,
    keeps the rewrite after the upload step's own check, which would otherwise see it first."""
    from hotfolder.pipeline import State
    from hotfolder.service import Daemon

    daemon = Daemon(site.settings())
    daemon.start()
    try:
        wait_for(lambda: sent() and any(job.state is State.LINK for job in site.jobs()),
                 what="the first bytes at the vendor and the job at its link")
        path.write_bytes(new_bytes)
        wait_for(lambda: (jobs := site.jobs()) and all(job.finished for job in jobs), what="every job to finish")
    finally:
        daemon.stop()


def enable_http(site: Site, **http: object) -> None:
    """Give the site's config an ``http`` section (on a free port of 127.0.0.1 unless ``listen`` says)."""
    config = yaml.safe_load(site.config_path.read_text())
    config["http"] = {"listen": "127.0.0.1:0", **http}
    site.config_path.write_text(yaml.safe_dump(config))


@contextmanager
def daemon_with_endpoint(site: Site) -> Iterator[tuple[Any, str]]:
    """The daemon in this process with its HTTP endpoint up; yields it and the endpoint's base URL."""
    from hotfolder.service import Daemon

    daemon = Daemon(site.settings())
    daemon.start()
    assert daemon.endpoint is not None, "enable_http(site) first"
    try:
        yield daemon, f"http://127.0.0.1:{daemon.endpoint.port}"
    finally:
        daemon.stop()


def env_for_daemon() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["FULCRUM_TOKEN"] = TOKEN
    # This checkout's sources first: an installed hotfolder (an editable install of another checkout)
    # must not stand in for the code under test.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "daemon"), str(ROOT)])
    return env


def hotfolder(*args: str, log: Path | None = None, env_extra: dict[str, str] | None = None,
              **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start the real command in its own process (kill tests need a process to kill)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the OS when the child ends
    return subprocess.Popen(
        [sys.executable, "-m", "hotfolder", *args], stdout=out, stderr=subprocess.STDOUT,
        env={**env_for_daemon(), **(env_extra or {})},
        cwd=ROOT, **kwargs,
    )


def kill9(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def files_under(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file())


@contextmanager
def simulated_site(tmp_path: Path, seed: Callable[[Sandbox], None], **sandbox_options: Any) -> Iterator[Site]:
    """A fresh simulator, seeded, and an installation beside it (config written for Fulcrum;
    vendor tests write their own targets over it)."""
    sandbox = Sandbox(tmp_path / "simulator", **sandbox_options)
    sandbox.start()
    try:
        seed(sandbox)
        root = tmp_path / "site"
        root.mkdir()
        yield Site(root, sandbox, write_config(root, sandbox.url))
    finally:
        sandbox.stop()


def _seed_fulcrum_records(sandbox: Sandbox) -> None:
    for record in ("rec-1", "rec-2"):
        sandbox.fulcrum.add_record(record, form_values={})


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A fresh installation with two records, talking to a fresh simulator."""
    with simulated_site(tmp_path, _seed_fulcrum_records, fulcrum_tokens=(TOKEN,)) as fresh:
        yield fresh
