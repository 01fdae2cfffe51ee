"""The shipped unit under a real systemd 252, booted in a ``systemd-nspawn`` container, exactly as the
README's "Running it for real" installs it: the built wheel in /opt/hotfolder/.venv, the unit and the
sysusers file unmodified, the folders on "a share" at /mnt/share given to the unit by the README's drop-in,
the secrets in /etc/hotfolder/env. (The daemon's dependencies are copied from the test's environment
rather than fetched, so that the test needs no package index; the wheel itself is installed by pip.) The daemon
talks to the simulator on the host's 127.0.0.1 (the container shares the host's network).

One test walks the admin's path in order, because each step starts from the state the previous one
left: start (returns after READY), a file done and attached once, a reload that adds a target (same
main PID), a refused reload, SIGSTOP met by the watchdog's restart, the sandbox's refusal to write
outside ReadWritePaths, the journal's lines, and a clean stop.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import FIELD, TOKEN, Site, site, wait_for
from tests.nspawn import Container, build_root, nspawn_missing, require_nspawn

__all__ = ["site"]  # the fixture, used by name

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "hotfolder.service"
TEMPLATE = REPO / "systemd" / "hotfolder@.service"
SYSUSERS = REPO / "systemd" / "hotfolder.sysusers"
VENV = "/opt/hotfolder/.venv"
SHARE = "/mnt/share"  # the folders, as on a mounted share: not the unit's defaults, so the README's drop-in is used
DROP_IN = f"""[Service]
ReadWritePaths={SHARE}/inbox {SHARE}/done {SHARE}/failed
[Unit]
RequiresMountsFor={SHARE}/inbox
"""
EXPOSURE_LIMIT = 1.5


def _exposure(unit: Path) -> tuple[float, str]:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match[1]), match[0]


@pytest.mark.parametrize("unit", ["hotfolder.service", "hotfolder@.service"])
def test_the_units_exposure_is_at_most_one_and_a_half(unit: str) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    score, line = _exposure(REPO / "systemd" / unit)
    print(f"\n{line} (limit {EXPOSURE_LIMIT})")
    assert score <= EXPOSURE_LIMIT, line


# -- building the machine -------------------------------------------------------------------------------


def _wheel(out: Path) -> Path:
    """The wheel a release ships, built from a copy of the sources (as tests/test_packaging.py does)."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "daemon", source / "daemon", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("hotfolder-*.whl")
    return built


def _requirements(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The distributions ``names`` need, recursively, as installed in the environment running the tests."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        requirement = todo.pop()
        if "extra ==" in requirement:
            continue
        name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())[0].lower()  # type: ignore[index]
        if name in found:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # needed only under another Python (a marker such as python_version < "3.11")
        found[name] = dist
        todo.extend(dist.requires or [])
    return list(found.values())


def _install_venv(root: Path, wheel: Path) -> None:
    """/opt/hotfolder/.venv on the host's /usr/bin/python3, holding the daemon's dependencies and pip
    copied from this environment (no package index needed); the wheel itself is installed by pip inside."""
    venv = root / VENV.lstrip("/")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    needs = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for dist in _requirements([*needs, "pip"]):
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # scripts outside site-packages: pip writes the daemon's own
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                (site_packages / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, site_packages / file)
    shutil.copy(wheel, root / "opt" / "hotfolder" / wheel.name)


def _config(sandbox_url: str, targets: dict[str, str], **overrides: Any) -> str:
    """The config an admin writes: the example's default folders, a Fulcrum target per record folder."""
    config: dict[str, Any] = {
        "inbox": f"{SHARE}/inbox", "done": f"{SHARE}/done", "failed": f"{SHARE}/failed",
        "journal": "/var/lib/hotfolder/journal.db", "log_level": "info",
        "watch": {"settle": "300ms", "check_complete": False},
        "retry": {"backoff": "200ms", "max_backoff": "2s"},
        "targets": {name: {"vendor": "fulcrum", "url": sandbox_url, "token": "${FULCRUM_API_TOKEN}", "field": FIELD,
                           "timeout": "10s"} for name in targets},
        **overrides,
    }
    return yaml.safe_dump(config, sort_keys=False)


class Machine:
    """The container with hotfolder installed, and the admin's commands."""

    def __init__(self, container: Container, root: Path) -> None:
        self.container = container
        self.root = root

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.container.run("systemctl", *args, check=check, timeout=timeout)

    def show(self, *properties: str) -> dict[str, str]:
        out = self.systemctl("show", "hotfolder", *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write_config(self, text: str) -> None:
        (self.root / "etc" / "hotfolder" / "config.yaml").write_text(text)

    def drop(self, target: str, record: str, name: str, data: bytes) -> None:
        """A file as a scanner or a share's user leaves it: owned by root, readable by all, in a record
        folder the service may write (so it can move the file out). Taking a lease on a file the service
        does not own is what its CAP_LEASE is for."""
        folder = self.root / SHARE.lstrip("/") / "inbox" / target / record
        folder.mkdir(parents=True, exist_ok=True)
        uid, gid = self.hotfolder_ids()
        for part in (folder.parent, folder):
            os.chown(part, uid, gid)
        temp = folder / f".{name}.partial"
        temp.write_bytes(data)
        temp.chmod(0o644)
        os.replace(temp, folder / name)

    def hotfolder_ids(self) -> tuple[int, int]:
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "hotfolder":
                return int(fields[2]), int(fields[3])
        raise LookupError("no hotfolder user")

    def done(self, target: str, record: str, name: str) -> Path:
        return self.root / SHARE.lstrip("/") / "done" / target / record / name

    def journal(self, *args: str) -> str:
        return self.container.run("journalctl", "--no-pager", "-u", "hotfolder", *args).stdout


@pytest.fixture
def machine(tmp_path: Path, site: Site) -> Iterator[Machine]:
    require_nspawn()
    root = tmp_path / "root"
    root.mkdir()
    build_root(root)
    (root / "opt" / "hotfolder").mkdir(parents=True)
    _install_venv(root, _wheel(tmp_path / "wheel-build"))
    container = Container(root, f"hotfolder-test-{os.getpid()}", tmp_path / "console.log")
    try:
        container.boot()
        yield Machine(container, root)
    finally:
        container.poweroff()


def _attached_bytes(site: Site, record: str) -> list[bytes]:
    return [site.sandbox.fulcrum.attachment_bytes(item["attachment_id"]) for item in site.attachments_on(record)]


def test_the_shipped_unit_under_systemd(machine: Machine, site: Site) -> None:
    assert nspawn_missing() is None
    run, root = machine.container.run, machine.root
    # The form the records' attachment field belongs to: what check-config --online looks for.
    site.sandbox.fulcrum.add_form("form-1", "Inspections",
                                  [{"type": "AttachmentField", "key": FIELD, "label": "Files", "data_name": "files"}])
    started = time.monotonic()

    # -- install, as the README says -------------------------------------------------------------------
    (wheel,) = (root / "opt" / "hotfolder").glob("hotfolder-*.whl")
    run(f"{VENV}/bin/python", "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
        "--disable-pip-version-check", f"/opt/hotfolder/{wheel.name}")
    (root / "etc" / "sysusers.d").mkdir(exist_ok=True)
    shutil.copy(SYSUSERS, root / "etc" / "sysusers.d" / "hotfolder.conf")
    run("systemd-sysusers")
    run("install", "-d", "-o", "hotfolder", "-g", "hotfolder", "-m", "0750",
        f"{SHARE}/inbox", f"{SHARE}/done", f"{SHARE}/failed")
    run("install", "-d", "-m", "0755", "/etc/hotfolder")
    machine.write_config(_config(site.sandbox.url, {"fulcrum": "rec-1"}))
    run("install", "-m", "0600", "/dev/stdin", "/etc/hotfolder/env", input=f"FULCRUM_API_TOKEN={TOKEN}\n")
    for check in ("check-config", "check-config --online"):  # with the secrets the service will have
        checked = run("sh", "-c", f"set -a && . /etc/hotfolder/env && exec {VENV}/bin/hotfolder {check} "
                      "/etc/hotfolder/config.yaml")
        assert "fulcrum" in checked.stdout and TOKEN not in checked.stdout + checked.stderr
    shutil.copy(UNIT, root / "etc" / "systemd" / "system" / "hotfolder.service")
    drop_in = root / "etc" / "systemd" / "system" / "hotfolder.service.d"
    drop_in.mkdir()
    (drop_in / "override.conf").write_text(DROP_IN)  # what `systemctl edit hotfolder` saves
    assert (root / "etc" / "systemd" / "system" / "hotfolder.service").read_bytes() == UNIT.read_bytes()
    verify = run("systemd-analyze", "verify", "/etc/systemd/system/hotfolder.service", check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    # The template too, for one instance (the sites with several shares).
    shutil.copy(TEMPLATE, root / "etc" / "systemd" / "system" / "hotfolder@.service")
    verify = run("systemd-analyze", "verify", "hotfolder@site-a.service", check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    score, line = _exposure(root / "etc" / "systemd" / "system" / "hotfolder.service")
    print(f"\n{line} (limit {EXPOSURE_LIMIT})")
    assert score <= EXPOSURE_LIMIT

    # -- start: returns once READY=1 has come (its STATUS= is already there) ------------------------------
    machine.systemctl("daemon-reload")
    machine.systemctl("enable", "--now", "hotfolder")
    state = machine.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert "queued" in state["StatusText"], state
    main_pid = state["MainPID"]
    assert "Status: " in machine.systemctl("status", "hotfolder", "--no-pager", check=False).stdout

    # -- a file ends in done/, attached once ---------------------------------------------------------
    first = b"%PDF-1.4 first file " + os.urandom(2000)
    machine.drop("fulcrum", "rec-1", "scan-1.pdf", first)
    wait_for(lambda: machine.done("fulcrum", "rec-1", "scan-1.pdf").exists(), timeout=30, what="scan-1 done")
    assert machine.done("fulcrum", "rec-1", "scan-1.pdf").read_bytes() == first
    assert _attached_bytes(site, "rec-1") == [first]

    # -- reload adds a target: same process, the new target's file uploads -------------------------------
    machine.write_config(_config(site.sandbox.url, {"fulcrum": "rec-1", "fulcrum-b": "rec-2"}))
    machine.systemctl("reload", "hotfolder")
    second = b"%PDF-1.4 second target " + os.urandom(2000)
    wait_for(lambda: (root / SHARE.lstrip("/") / "inbox" / "fulcrum-b").is_dir(), what="the new target's folder")
    machine.drop("fulcrum-b", "rec-2", "scan-2.pdf", second)
    wait_for(lambda: machine.done("fulcrum-b", "rec-2", "scan-2.pdf").exists(), timeout=30, what="scan-2 done")
    assert _attached_bytes(site, "rec-2") == [second]
    assert machine.show("MainPID")["MainPID"] == main_pid

    # -- a bad config is refused; the daemon keeps working on the old one ---------------------------------
    machine.write_config(_config(site.sandbox.url, {"fulcrum": "rec-1", "fulcrum-b": "rec-2"}, workers="many"))
    machine.systemctl("reload", "hotfolder")
    wait_for(lambda: "reload refused" in machine.show("StatusText")["StatusText"], what="STATUS says refused")
    third = b"%PDF-1.4 after the refusal " + os.urandom(2000)
    machine.drop("fulcrum", "rec-1", "scan-3.pdf", third)
    wait_for(lambda: machine.done("fulcrum", "rec-1", "scan-3.pdf").exists(), timeout=30, what="scan-3 done")
    assert machine.show("MainPID")["MainPID"] == main_pid
    machine.write_config(_config(site.sandbox.url, {"fulcrum": "rec-1", "fulcrum-b": "rec-2"}))

    # -- writes outside ReadWritePaths are refused inside the service's sandbox ------------------------------
    uid, gid = machine.hotfolder_ids()
    daemon_pid = machine.container.host_pid(int(main_pid))
    probe = ["nsenter", "-t", str(daemon_pid), "-m", "-S", str(uid), "-G", str(gid), "--", "/usr/bin/touch"]
    for outside in ("/etc/hotfolder/probe", "/opt/hotfolder/probe", "/mnt/probe", "/var/probe"):
        refused = subprocess.run([*probe, outside], capture_output=True, text=True, timeout=30, check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr, (outside, refused.stderr)
    allowed = subprocess.run([*probe, f"{SHARE}/done/probe", "/var/lib/hotfolder/probe"],
                             capture_output=True, text=True, timeout=30, check=False)
    assert allowed.returncode == 0, allowed.stderr  # the same probe can write where the unit allows it

    # -- MemoryDenyWriteExecute: enforced, and what the dependencies do still works -------------------------
    # ctypes makes a callback as it is imported (and watchdog's inotify and our renameat2 use ctypes):
    # Debian 12's libffi builds callbacks from static trampolines, so no W+X page is needed; a W+X
    # mapping itself is refused.
    mdwe = ["systemd-run", "--wait", "--pipe", "--quiet", "-p", "MemoryDenyWriteExecute=yes", "-p", "User=hotfolder",
            f"{VENV}/bin/python", "-c"]
    callback = run(*mdwe, "import ctypes, watchdog.observers.inotify_c, hotfolder.outcomes; "
                   "print(ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)())")
    assert callback.stdout.strip() == "7", callback.stderr
    wx = run(*mdwe, "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)",
             check=False)
    assert wx.returncode != 0 and "PermissionError" in wx.stderr, wx.stderr

    # -- SIGSTOP: the watchdog restarts it, and it resumes its jobs ------------------------------------------
    os.kill(daemon_pid, signal.SIGSTOP)
    fourth = b"%PDF-1.4 dropped while stopped " + os.urandom(2000)
    machine.drop("fulcrum", "rec-1", "scan-4.pdf", fourth)
    wait_for(lambda: int(machine.show("NRestarts")["NRestarts"]) >= 1, timeout=60, interval=0.5,
             what="a watchdog restart")
    wait_for(lambda: machine.show("ActiveState")["ActiveState"] == "active", timeout=30, what="active again")
    assert machine.show("MainPID")["MainPID"] != main_pid
    wait_for(lambda: machine.done("fulcrum", "rec-1", "scan-4.pdf").exists(), timeout=30, what="scan-4 done")
    assert sorted(_attached_bytes(site, "rec-1")) == sorted([first, third, fourth])
    assert "Watchdog timeout" in machine.journal("-o", "cat")  # systemd's own line: the restart was the watchdog's

    # -- stop: exit 0 within TimeoutStopSec ------------------------------------------------------------------
    machine.systemctl("stop", "hotfolder", timeout=70)
    state = machine.show("ActiveState", "Result", "ExecMainStatus")
    # Result would be "timeout" had systemd run out of TimeoutStopSec and killed it: success is "in time".
    assert state["ActiveState"] == "inactive" and state["Result"] == "success" and state["ExecMainStatus"] == "0", state

    # -- journald: JSON lines with priorities, warnings filter, no secret ---------------------------------------
    entries = [json.loads(line) for line in machine.journal("-o", "json").splitlines() if line.strip()]
    daemon_lines = [e for e in entries if e.get("MESSAGE", "").startswith("{")]
    assert daemon_lines, "the daemon's JSON lines reached the journal"
    by_priority = {int(e["PRIORITY"]) for e in daemon_lines}
    assert 6 in by_priority and 3 in by_priority, by_priority  # info lines, and the refused reload's error
    for entry in daemon_lines:
        fields = json.loads(entry["MESSAGE"])
        assert "event" in fields and "level" in fields
        expected = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}[fields["level"]]
        assert int(entry["PRIORITY"]) == expected, entry
    warnings = machine.journal("-o", "cat", "-p", "warning")
    assert "reload refused" in warnings and "workers" in warnings
    assert '"file done"' not in warnings  # info lines are not warnings
    assert TOKEN not in machine.journal("-o", "json")
    assert "CAP_LEASE" not in machine.journal("-o", "cat")  # the lease on root's files worked: no warning
    print(f"real-systemd walk: {time.monotonic() - started:.1f}s")
