"""Live progress where people look: `hotfolder once` on a terminal and not, `hotfolder status` while a
file is on its way, and `status --watch`. Real processes: the command in a pseudo-terminal or a pipe,
the daemon and the status command as two processes talking through the files beside the journal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

from tests.harness import ROOT, Site, env_for_daemon, hotfolder, kill9, site, wait_for

__all__ = ["site"]  # the fixture, imported for pytest

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_in_terminal(*args: str, timeout: float = 60) -> str:
    """Run the command with a pseudo-terminal as its stdout and stderr; what it wrote, without colours."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "hotfolder", *args], stdin=subprocess.DEVNULL,
                               stdout=terminal, stderr=terminal, env={**env_for_daemon(), "COLUMNS": "160"},
                               cwd=ROOT)
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the other side closed: the process ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(10)
    os.close(controller)
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def drop_three(site: Site) -> None:
    for name in ("one.pdf", "two.pdf", "three.pdf"):
        site.drop("rec-1", name, b"%PDF-1.4 " + name.encode() + os.urandom(5000))


def test_once_on_a_terminal_shows_files_and_bytes(site: Site) -> None:
    drop_three(site)
    shown = run_in_terminal("once", "-c", str(site.config_path))
    assert "3 of 3 files" in shown, shown[-2000:]
    assert re.search(r"bytes .* 14\.\d KiB of 14\.\d KiB", shown), shown[-2000:]
    assert shown.count("file done") == 3  # the log lines still print, above the display
    assert len(list((site.done / "fulcrum" / "rec-1").iterdir())) == 3


def test_once_not_on_a_terminal_writes_plain_log_lines(site: Site) -> None:
    drop_three(site)
    result = subprocess.run([sys.executable, "-m", "hotfolder", "once", "-c", str(site.config_path)],
                            capture_output=True, env=env_for_daemon(), cwd=ROOT, timeout=60, check=True)
    lines = result.stdout.decode().splitlines()
    events = [json.loads(line)["event"] for line in lines]  # every line is a JSON log line
    assert events.count("file done") == 3
    assert "of 3 files" not in result.stdout.decode()


def test_status_shows_an_upload_in_flight_with_bytes_and_percent(site: Site) -> None:
    """The vendor's storage takes its time to read an 8 MiB body: `status` shows it on its way."""
    site.sandbox.add_fault("PUT", r"^/s3/", action="delay", delay=6)
    site.drop("rec-1", "big.pdf", b"%PDF-1.4 " + os.urandom(8 * 1024 * 1024))
    daemon = hotfolder("run", "-c", str(site.config_path), log=site.root / "daemon.log")
    try:
        def in_flight() -> str:
            out = subprocess.run([sys.executable, "-m", "hotfolder", "status", "-c", str(site.config_path)],
                                 capture_output=True, env=env_for_daemon(), cwd=ROOT, timeout=30).stdout.decode()
            return out if re.search(r"big\.pdf at upload: [\d.]+ \w+ of 8\.0 MiB \([\d.]+%", out) else ""
        shown = wait_for(in_flight, timeout=20, interval=0.3, what="the upload in `hotfolder status`")
        print(shown)
        assert "in flight:" in shown
        report = json.loads(subprocess.run(
            [sys.executable, "-m", "hotfolder", "status", "--json", "-c", str(site.config_path)],
            capture_output=True, env=env_for_daemon(), cwd=ROOT, timeout=30, check=True).stdout)
        (upload,) = report["in_flight"]
        assert upload["file"] == "fulcrum/rec-1/big.pdf" and upload["step"] == "upload"
        assert upload["total"] == 8 * 1024 * 1024 + 9 and 0 < upload["sent"] <= upload["total"]
        assert report["oldest_waiting"]["seconds"] >= 0
        # --watch redraws until stopped.
        watch = subprocess.Popen([sys.executable, "-m", "hotfolder", "status", "--watch", "0.3", "-c",
                                  str(site.config_path)], stdout=subprocess.PIPE, env=env_for_daemon(), cwd=ROOT)
        time.sleep(1.5)
        watch.terminate()
        redraws = watch.communicate(timeout=10)[0].decode()
        assert redraws.count("unfinished jobs by step:") >= 2
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "big.pdf").exists(), timeout=30, what="the upload")
        wait_for(lambda: "in flight:" not in subprocess.run(
            [sys.executable, "-m", "hotfolder", "status", "-c", str(site.config_path)],
            capture_output=True, env=env_for_daemon(), cwd=ROOT, timeout=30).stdout.decode(), what="nothing in flight")
    finally:
        kill9(daemon)
