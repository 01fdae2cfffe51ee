"""A real systemd 252 booted in a ``systemd-nspawn`` container, for tests of the shipped unit.

The container's root is a small folder of its own: the host's ``/usr`` bound read-only (systemd,
Python and the shell come from there), an ``/etc`` of a few files, and whatever the test installs. The
recipe and why each piece is there: ../shared/SYSTEMD-TEST.md (kept with the project's notes).
The container shares the host's network, so a simulator on the host's 127.0.0.1 is reachable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.missing import missing_server

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Units that would wait for a console or configure the machine at first boot: masked.
MASKED = (
    "systemd-firstboot.service", "getty.target", "console-getty.service", "systemd-logind.service",
    "systemd-repart.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
)
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))


def nspawn_missing() -> str | None:
    """Why a container cannot be booted here, or None if it can."""
    if os.geteuid() != 0:
        return "booting systemd in a container needs root"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (make systemd, or .ci/install-systemd, installs it)"
    return None


def require_nspawn() -> None:
    """Skip with the reason; in CI fail instead: the test must never be skipped there."""
    reason = nspawn_missing()
    if reason is None:
        return
    missing_server(reason)


def build_root(root: Path) -> None:
    """The smallest root folder systemd boots from with the host's /usr."""
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
    etc = root / "etc"
    (etc / "systemd" / "system").mkdir(parents=True)
    shutil.copy("/etc/os-release", etc / "os-release")
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    (etc / "nsswitch.conf").write_text("passwd: files systemd\ngroup: files systemd\nhosts: files\n")
    (etc / "mtab").symlink_to("/proc/self/mounts")
    # A machine id: without one systemd takes the boot for a first boot and presets every unit in /usr.
    (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")
    (etc / "systemd" / "system" / "default.target").symlink_to("/usr/lib/systemd/system/multi-user.target")
    for unit in MASKED:
        (etc / "systemd" / "system" / unit).symlink_to("/dev/null")
    for name in ("usr", "var", "tmp", "root", "srv", "opt", "run", "proc", "sys", "dev"):
        (root / name).mkdir(exist_ok=True)


class Container:
    """One booted container: ``run`` commands inside it, ``poweroff`` it."""

    def __init__(self, root: Path, name: str, console_log: Path) -> None:
        self.root = root
        self.name = name
        self.console_log = console_log
        self._process: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self._cgroups = [hierarchy / name for hierarchy in CGROUP_HIERARCHIES if hierarchy.is_dir()]

    def boot(self, timeout: float = 30.0) -> None:
        for cgroup in self._cgroups:
            cgroup.mkdir(exist_ok=True)
        cgroups = [str(cgroup / "cgroup.procs") for cgroup in self._cgroups]

        def own_cgroup() -> None:
            # nspawn makes payload/ and supervisor/ beside its caller's cgroup: give it a folder of its own.
            for procs in cgroups:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))

        with open(self.console_log, "wb") as console:
            self._process = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "-M", self.name, "--bind-ro=/usr",
                 "--register=no", "--keep-unit", "--console=read-only", "-b"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, preexec_fn=own_cgroup,
            )
        deadline = time.monotonic() + timeout
        while self.leader is None:
            self.leader = self._find_leader()
            if self.leader is None:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the container did not start:\n{self.console_log.read_text()}")
                time.sleep(0.05)
        # Until systemd has exec'd as PID 1 and opened its socket, systemctl says nothing, or "offline".
        while True:
            answer = self.run("systemctl", "is-system-running", "--wait", timeout=timeout, check=False)
            state = answer.stdout.strip()
            if state in ("running", "degraded"):
                return
            if state not in ("", "offline") or time.monotonic() > deadline:
                raise AssertionError(f"systemd in the container is {state!r} ({answer.stderr.strip()}):\n"
                                     f"{self.console_log.read_text()}")
            time.sleep(0.05)

    def _find_leader(self) -> int | None:
        """The container's PID 1, seen from the host: the nspawn child whose NSpid ends in 1."""
        assert self._process is not None
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
            nspid = fields.get("NSpid", "").split()
            if len(nspid) == 2 and nspid[1] == "1" and fields.get("PPid", "").strip() == str(self._process.pid):
                return int(nspid[0])
        return None

    def run(self, *argv: str, timeout: float = 60.0, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces, its root), as root."""
        assert self.leader is not None
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "-r", "-w", "env", "-i", f"PATH={PATH}", *argv],
            capture_output=True, text=True, timeout=timeout, check=False, input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def host_pid(self, pid_inside: int) -> int:
        """The host's pid of a process of the container."""
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                nspid = next(line for line in status.read_text().splitlines() if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            ids = nspid.split()[1:]
            if len(ids) >= 2 and ids[-1] == str(pid_inside) and self._inside(int(ids[0])):
                return int(ids[0])
        raise LookupError(f"no process {pid_inside} in the container")

    def _inside(self, host_pid: int) -> bool:
        try:
            return os.readlink(f"/proc/{host_pid}/ns/pid") == os.readlink(f"/proc/{self.leader}/ns/pid")
        except OSError:
            return False

    def poweroff(self, timeout: float = 30.0) -> None:
        if self._process is None:
            return
        if self._process.poll() is None and self.leader is not None:
            self.run("systemctl", "--no-wall", "poweroff", check=False, timeout=timeout)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.leader, signal.SIGKILL)  # the container's PID 1: its whole pid namespace goes
                self._process.wait(10)
        self._process = None
        for cgroup in self._cgroups:
            _remove_cgroup(cgroup)


def _remove_cgroup(cgroup: Path) -> None:
    """Remove a cgroup folder and the ones nspawn made below it, deepest first (they must be empty)."""
    if not cgroup.is_dir():
        return
    folders = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
    for folder in [*folders, cgroup]:
        with contextlib.suppress(OSError):
            folder.rmdir()
