"""The command line as an admin meets it: exit codes, messages, status, retry, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests import formats
from tests.harness import ROOT, TOKEN, Site, env_for_daemon, run_once_in_process, site

__all__ = ["site"]


def _hotfolder(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotfolder", *args],
        capture_output=True,
        text=True,
        env=env_for_daemon(),
        cwd=ROOT,
        timeout=timeout,
    )


def test_unknown_key_is_refused_with_exit_2_naming_it(site: Site) -> None:
    text = site.config_path.read_text().replace("workers: 4", "workers: 4\nworkres: 8")
    site.config_path.write_text(text)
    for command in (["check-config", str(site.config_path)], ["run", "-c", str(site.config_path)]):
        result = _hotfolder(*command)
        assert result.returncode == 2, result.stderr
        assert "workres" in result.stderr


def test_unknown_target_key_and_missing_variable_are_named(site: Site, tmp_path: Path) -> None:
    text = site.config_path.read_text().replace("field: 6ca0", "field: 6ca0\n    feild: x")
    site.config_path.write_text(text)
    result = _hotfolder("check-config", str(site.config_path))
    assert result.returncode == 2 and "targets.fulcrum.feild" in result.stderr

    config = tmp_path / "c.yaml"
    config.write_text(site.config_path.read_text().replace("\n    feild: x", "").replace("FULCRUM_TOKEN", "NOPE_T"))
    result = _hotfolder("check-config", str(config))
    assert result.returncode == 2 and "NOPE_T" in result.stderr


def test_check_config_accepts_a_good_file(site: Site) -> None:
    result = _hotfolder("check-config", str(site.config_path))
    assert result.returncode == 0 and "ok" in result.stdout
    assert TOKEN not in result.stdout


def test_status_reports_failures_with_reasons_and_retry_brings_them_back(site: Site) -> None:
    site.drop("missing-record", "lost.pdf", b"no such record at the vendor")
    site.drop("rec-1", "fine.pdf", b"fine")
    assert run_once_in_process(site) == 1

    result = _hotfolder("status", "--json", "-c", str(site.config_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["finished"] == {"done": 1, "failed": 1}
    (failure,) = report["failures"]
    assert failure["file"] == "fulcrum/missing-record/lost.pdf" and failure["step"] == "presign"
    assert "not found" in failure["reason"]
    assert failure["reason"]
    text = _hotfolder("status", "-c", str(site.config_path)).stdout
    assert "lost.pdf" in text and "failures" in text

    site.sandbox.fulcrum.add_record("missing-record", form_values={})
    result = _hotfolder("retry", "-c", str(site.config_path))
    assert result.returncode == 0 and "1 file(s)" in result.stdout
    assert (site.inbox / "fulcrum" / "missing-record" / "lost.pdf").exists()
    assert not list(site.failed.rglob("*.error.json"))
    assert run_once_in_process(site) == 0
    assert (site.done / "fulcrum" / "missing-record" / "lost.pdf").read_bytes() == b"no such record at the vendor"


def test_demo_carries_a_file_to_every_vendor(tmp_path: Path) -> None:
    """What a newcomer does: drop a file in each demo folder; each reaches done/."""
    drops = {
        "fulcrum/rec-1002/scan.pdf": formats.pdf(b"demo"),
        "fulcrum-forms/form-1/form-guide.pdf": formats.pdf(b"guide"),
        "fulcrum-camera/rec-1001/site.jpg": formats.jpeg(b"jpeg"),
        "fulcrum-layers/topo.mbtiles": formats.mbtiles(),
        "visibuild/proj-1/defect.jpg": formats.jpeg(b"defect"),
        "saferme/7001/hazard.png": formats.png(b"hazard"),
        "espocrm-documents/doc-1/plan.pdf": formats.pdf(b"plan"),
        "espocrm-notes/note-1/notes.txt": b"inspection notes",
    }
    demo = tmp_path / "demo"
    for relative, data in drops.items():
        (demo / "inbox" / relative).parent.mkdir(parents=True, exist_ok=True)
        (demo / "inbox" / relative).write_bytes(data)
    result = _hotfolder("demo", "--dir", str(demo), "--port", "0", "--exit-when-idle", timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "drop files" in result.stdout
    assert (demo / "done" / "fulcrum" / "rec-1001" / "welcome-scan.txt").exists()
    for relative, data in drops.items():
        assert (demo / "done" / relative).read_bytes() == data, relative
    assert not any((demo / "failed").rglob("*"))


def test_sigterm_stops_run_cleanly_with_exit_0(site: Site) -> None:
    import signal

    from tests.harness import hotfolder, wait_for

    log = site.root / "run.log"
    process = hotfolder("run", "-c", str(site.config_path), log=log)
    wait_for(lambda: "watching" in log.read_text(), what="the daemon to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert "hotfolder stopped" in log.read_text()
