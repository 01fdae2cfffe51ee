"""``hotfolder run`` re-reads its config on SIGHUP, over real HTTP against the simulator: a target added
takes files at once, the log level changes, a target removed keeps its job waiting in the journal (status
says so) until a reload brings it back, a job in flight is not dropped, and a config that does not load is
refused with the key named while the daemon keeps working on the old one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hotfolder import demo
from tests.harness import Site, env_for_daemon, hotfolder, wait_for
from tests.test_circuit import NOTE, RECORD, configure, vendors

__all__ = ["vendors"]  # the fixture, used by name


@pytest.fixture
def running(vendors: Site) -> Iterator[tuple[Site, subprocess.Popen[bytes]]]:
    configure(vendors, ("fulcrum", "espocrm-notes"), log_level="info")
    process = hotfolder("run", "-c", str(vendors.config_path), log=vendors.root / "daemon.log")
    try:
        wait_for(lambda: (vendors.inbox / "espocrm-notes").is_dir() and _log(vendors), what="the daemon to start")
        wait_for(lambda: any(line.get("event") == "watching" for line in _log(vendors)), what="watching")
        yield vendors, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _log(site: Site) -> list[dict[str, object]]:
    path = site.root / "daemon.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _reloaded(site: Site, count: int) -> dict[str, object]:
    """Wait for the ``count``-th reload line (applied or refused) and return it."""
    def lines() -> list[dict[str, object]]:
        return [line for line in _log(site) if str(line.get("event", "")).startswith("configuration reload")]
    wait_for(lambda: len(lines()) >= count, what=f"reload number {count}")
    return lines()[count - 1]


def _status(site: Site) -> str:
    return subprocess.run([sys.executable, "-m", "hotfolder", "status", "-c", str(site.config_path)],
                          capture_output=True, text=True, timeout=30, check=True, env=env_for_daemon()).stdout


def test_a_target_added_by_reload_takes_files_and_the_log_level_changes(
        running: tuple[Site, subprocess.Popen[bytes]]) -> None:
    site, process = running
    configure(site, ("fulcrum", "espocrm-notes", "fulcrum-camera"), log_level="debug")
    process.send_signal(signal.SIGHUP)
    line = _reloaded(site, 1)
    assert line["event"] == "configuration reloaded" and "added: fulcrum-camera" in str(line["changes"])
    site.drop(RECORD, "site.jpg", b"\xff\xd8\xff photo bytes", target="fulcrum-camera")
    wait_for(lambda: (site.done / "fulcrum-camera" / RECORD / "site.jpg").exists(), what="the new target's file")
    assert len(site.sandbox.fulcrum.photos()) == 1
    assert any(line.get("event") == "step done" for line in _log(site)), "debug lines after the reload"


def test_a_removed_target_waits_in_the_journal_and_resumes_when_it_comes_back(
        running: tuple[Site, subprocess.Popen[bytes]]) -> None:
    """The note's upload is held by the vendor while the reload removes its target: the upload finishes
    (not dropped), the job then waits at its link; the reload that brings the target back finishes it."""
    site, process = running
    site.sandbox.add_fault("POST", r"^/api/v1/Attachment$", action="delay", delay=1.5)
    site.drop(NOTE, "notes.txt", b"field notes", target="espocrm-notes")
    wait_for(lambda: any(job.state.value == "upload" for job in site.jobs()), what="the upload under way")
    configure(site, ("fulcrum",))
    process.send_signal(signal.SIGHUP)
    assert "removed: espocrm-notes" in str(_reloaded(site, 1)["changes"])
    wait_for(lambda: "is not in the configuration" in _status(site), what="status to show the waiting job")
    (job,) = site.jobs()
    assert not job.finished and job.state.value in ("finalize", "link"), job  # past its upload, waiting
    assert site.sandbox.espocrm.record("Note", NOTE)["attachmentsIds"] == []
    assert not [p for p in site.failed.rglob("*") if p.is_file()]

    configure(site, ("fulcrum", "espocrm-notes"))
    process.send_signal(signal.SIGHUP)
    assert "added: espocrm-notes" in str(_reloaded(site, 2)["changes"])
    wait_for(lambda: (site.done / "espocrm-notes" / NOTE / "notes.txt").exists(), what="done after the return")
    assert [site.sandbox.espocrm.attachment_bytes(a) for a in
            site.sandbox.espocrm.record("Note", NOTE)["attachmentsIds"]] == [b"field notes"]
    uploads = [r for r in site.sandbox.requests() if r["method"] == "POST" and r["path"] == "/api/v1/Attachment"]
    assert len(uploads) == 1, "the upload in flight during the reload was not dropped and sent again"


def test_a_config_that_does_not_load_is_refused_and_the_old_one_keeps_working(
        running: tuple[Site, subprocess.Popen[bytes]]) -> None:
    site, process = running
    good = site.config_path.read_text()
    site.config_path.write_text(good.replace("workers: 4", "workers: many"))
    process.send_signal(signal.SIGHUP)
    line = _reloaded(site, 1)
    assert line["event"].startswith("configuration reload refused") and line["level"] == "error"
    assert str(line["reason"]).startswith("workers:"), line
    site.drop(RECORD, "after.pdf", b"%PDF-1.4 after the refusal", target="fulcrum")
    wait_for(lambda: (site.done / "fulcrum" / RECORD / "after.pdf").exists(), what="done on the old config")
    held = site.sandbox.fulcrum.record(RECORD)["form_values"].get(demo.FIELD) or []
    assert len(held) == 1
