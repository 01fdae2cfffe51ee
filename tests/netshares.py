"""Real network-share servers on 127.0.0.1 for the tests: Samba, vsftpd and sshd (mounted with sshfs).

Why real servers: what goes wrong with a network inbox (oplocks and leases, FTP uploads that arrive
in pieces, sshfs's attribute cache hiding a file that is still growing) is the server's or the
client's own behaviour, which a simulator would only copy from our assumptions.

Each server is a private child process: its own config, port, state, keys and log under `workdir`,
bound to 127.0.0.1 only; the system's instances and systemd are never touched. Each function is a
context manager usable from a pytest fixture::

    with samba_share(inbox, tmp_path / "smb") as smb: ...

A missing binary skips the test, except when `CI` is set: CI never skips a server test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from tests.missing import missing_server

HOST = "127.0.0.1"
PASSWORD = "hotfolder-test-pw"
START_TIMEOUT = 15.0  # seconds; each server is normally up in well under one
STOP_TIMEOUT = 5.0
INSTALL_HINT = "run `make test` as root to install it (.ci/install-netservers)"


# --- shared machinery ---------------------------------------------------------------------------


def _require(*binaries: str) -> dict[str, str]:
    """Absolute paths of `binaries`; skip (or fail under CI) when one is missing."""
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") for name in binaries}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        missing_server(f"{', '.join(missing)} not installed: {INSTALL_HINT}")
    return {name: path for name, path in found.items() if path is not None}


def free_port() -> int:
    # The kernel picks a port that is free now; a tiny race with other processes remains, acceptably.
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _free_port_range(size: int) -> tuple[int, int]:
    """`size` consecutive ports that are all free now (vsftpd wants a range for passive mode)."""
    for _ in range(200):
        base = int.from_bytes(os.urandom(2), "big") % (60000 - 30000) + 30000
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    s = stack.enter_context(socket.socket())
                    s.bind((HOST, port))
            return base, base + size - 1
        except OSError:
            continue
    raise RuntimeError(f"no {size} consecutive free ports on {HOST}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    # Own session so that stopping it never signals pytest's group; output to a file, not a pipe
    # nobody reads (a full pipe would stall the server).
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the group: smbd and sshd fork per-connection children
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before listening on {port}:\n{_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not listening on {HOST}:{port} after {START_TIMEOUT}s:\n{_tail(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def _running(argv: Sequence[str], port: int, name: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = _spawn(argv, log)
    try:
        _wait_for_port(proc, port, name, log)
        yield proc
    finally:
        _stop(proc)


def _run(argv: Sequence[str], log: Path, stdin: bytes = b"") -> None:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=30, check=False)
    with log.open("ab") as out:
        out.write(b"$ " + " ".join(argv).encode() + b"\n" + result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{_tail(log)}")


# --- Samba --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmbShare:
    host: str
    port: int
    share: str
    user: str
    password: str

    def unc(self, relpath: str = "") -> str:
        r"""`\\host\share\rel\path` for smbprotocol's `smbclient` (pass `port=self.port` alongside)."""
        parts = [p for p in PurePosixPath(relpath.replace("\\", "/")).parts if p != "/"]
        return "\\\\" + "\\".join([self.host, self.share, *parts])


@contextlib.contextmanager
def samba_share(folder: Path, workdir: Path, share: str = "inbox") -> Iterator[SmbShare]:
    """smbd serving `folder` read-write as //127.0.0.1/<share> to user root, password PASSWORD."""
    bins = _require("smbd", "smbpasswd")
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "lock", "pid", "cache", "private", "ncalrpc", "log"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "smb.conf"
    log = workdir / "log" / "smbd.log"
    # Every directory smbd writes is private, so it never meets the system instance's tdb files.
    conf.write_text(f"""\
[global]
smb ports = {port}
interfaces = lo
bind interfaces only = yes
disable netbios = yes
server role = standalone server
passdb backend = tdbsam:{workdir}/private/passdb.tdb
state directory = {workdir}/state
lock directory = {workdir}/lock
pid directory = {workdir}/pid
cache directory = {workdir}/cache
private dir = {workdir}/private
ncalrpc dir = {workdir}/ncalrpc
log file = {log}
max log size = 0
log level = 1
# The kernel's leases need Linux-only privileges and would hide Samba's own oplock behaviour.
kernel oplocks = no
load printers = no
printing = bsd
printcap name = /dev/null
disable spoolss = yes
map to guest = never
# Child smbd processes exec helpers that would otherwise look in /etc/samba and /var/lib/samba.
usershare path =

[{share}]
path = {folder}
read only = no
browseable = yes
valid users = root
""")
    user = "root"  # tests run as root: a Samba user needs a Unix account, and root is the one we have
    _run([bins["smbpasswd"], "-c", str(conf), "-a", "-s", user], log, stdin=f"{PASSWORD}\n{PASSWORD}\n".encode())
    argv = [bins["smbd"], "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)]
    with _running(argv, port, "smbd", log):
        yield SmbShare(HOST, port, share, user, PASSWORD)


# --- vsftpd -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FtpServer:
    host: str
    port: int
    user: str
    password: str
    path: str  # the FTP directory that is the caller's `folder`


def _ftp_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("ftp")
    except KeyError:
        pytest.fail("user 'ftp' missing (the Debian vsftpd package creates it)", pytrace=False)
    return entry.pw_uid, entry.pw_gid


def writable_for_ftp(path: Path) -> None:
    """Create `path` if needed and let anonymous FTP clients upload and mkdir in it.

    Anonymous sessions run as the `ftp` user, so a folder made by root (a test, the daemon) is
    read-only to them. ftp_server does this for the folders already under its `folder` at start;
    call it for any folder created under `folder` later. Never call it on `folder` itself.
    """
    uid, gid = _ftp_ids()
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)


@contextlib.contextmanager
def ftp_server(folder: Path, workdir: Path) -> Iterator[FtpServer]:
    """vsftpd with anonymous login; the login directory, FTP path "/", is `folder` itself.

    Layout: FTP "/" = `folder`, FTP "/a/b" = `folder`/a/b. Files land in SUBFOLDERS of `folder` only:
    anonymous sessions are chrooted into anon_root = `folder`, and vsftpd 3.0.3 refuses ("500 OOPS:
    refusing to run with writable root inside chroot()") when the chroot root is writable for the
    session's user (allow_writeable_chroot covers local users only, not anonymous ones). So
    `folder` stays root's and not group/other-writable, and every directory already below it is
    handed to the `ftp` user (:func:`writable_for_ftp`; do the same for folders created later).

    Why anonymous: it needs neither PAM nor a Unix password, the only login that works as root
    without adding a system user (vsftpd denies root via /etc/ftpusers). Uploads are owned by `ftp`.
    """
    bins = _require("vsftpd")
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, 0, 0)
    folder.chmod(folder.stat().st_mode & 0o7755)  # no group/other write: see above
    for sub in folder.rglob("*"):
        if sub.is_dir() and not sub.is_symlink():
            writable_for_ftp(sub)
    workdir.mkdir(parents=True, exist_ok=True)
    empty = workdir / "empty"  # the pre-login chroot: must exist, root-owned, not writable
    empty.mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    pasv_min, pasv_max = _free_port_range(20)
    conf = workdir / "vsftpd.conf"
    log = workdir / "vsftpd.log"
    conf.write_text(f"""\
listen=YES
listen_ipv6=NO
listen_address={HOST}
listen_port={port}
background=NO
run_as_launching_user=NO
anonymous_enable=YES
no_anon_password=YES
anon_root={folder}
ftp_username=ftp
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_world_readable_only=NO
anon_umask=022
secure_chroot_dir={empty}
connect_from_port_20=NO
pasv_enable=YES
pasv_address={HOST}
pasv_min_port={pasv_min}
pasv_max_port={pasv_max}
# Namespaces and seccomp can be denied in containers; the test server needs neither.
isolate=NO
isolate_network=NO
seccomp_sandbox=NO
tcp_wrappers=NO
userlist_enable=NO
vsftpd_log_file={log}
xferlog_enable=YES
dual_log_enable=NO
xferlog_std_format=NO
log_ftp_protocol=YES
""")
    with _running([bins["vsftpd"], str(conf)], port, "vsftpd", log):
        yield FtpServer(HOST, port, "anonymous", "", "/")


# --- sshd + sshfs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SshfsMount:
    mountpoint: Path  # the client side: read and write here
    server_folder: Path  # the server side, the same files as sshd sees them
    host: str
    port: int
    user: str
    identity_file: Path


def _mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)  # field 5 is the mount point


@contextlib.contextmanager
def sshfs_mount(
    server_folder: Path, mountpoint: Path, workdir: Path, options: Sequence[str] = ()
) -> Iterator[SshfsMount]:
    """sshd on a private port serving `server_folder` over SFTP, mounted at `mountpoint` with sshfs.

    sshfs keeps its default caching (attributes, directory entries: 20 s), so a test sees what a
    real sshfs client sees.
    """
    bins = _require("sshd", "ssh-keygen", "sshfs")
    unmount = shutil.which("fusermount3") or shutil.which("fusermount")
    if not Path("/dev/fuse").exists():
        pytest.skip("/dev/fuse missing: this machine (container?) cannot mount FUSE file systems")
    for path in (server_folder, mountpoint, workdir):
        path.mkdir(parents=True, exist_ok=True)
    # sshd insists on its compiled-in privilege-separation directory; it is empty and harmless.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    log = workdir / "sshd.log"
    for key in (host_key, client_key):
        if not key.exists():
            _run([bins["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-C", "hotfolder-test", "-f", str(key)], log)
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    port = free_port()
    conf = workdir / "sshd_config"
    conf.write_text(f"""\
Port {port}
ListenAddress {HOST}
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {authorized}
# Test files live under /tmp with loose modes; StrictModes would reject them.
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    ssh_opts = ",".join([
        f"IdentityFile={client_key}",
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
    ])
    sshfs_log = workdir / "sshfs.log"
    user = "root"
    with _running([bins["sshd"], "-D", "-e", "-f", str(conf)], port, "sshd", log):
        # -f: sshfs stays our child (output in sshfs.log) instead of daemonising; -F /dev/null keeps
        # the user's ~/.ssh/config out of it.
        argv = [bins["sshfs"], "-f", "-F", "/dev/null", "-p", str(port), "-o", ",".join([ssh_opts, *options]),
                f"{user}@{HOST}:{server_folder}", str(mountpoint)]  # fmt: skip
        sshfs = _spawn(argv, sshfs_log)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _mounted(mountpoint):
                if sshfs.poll() is not None:
                    raise RuntimeError(f"sshfs exited with {sshfs.returncode}:\n{_tail(sshfs_log)}\n{_tail(log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshfs not mounted after {START_TIMEOUT}s:\n{_tail(sshfs_log)}\n{_tail(log)}")
                time.sleep(0.05)
            yield SshfsMount(mountpoint, server_folder, HOST, port, user, client_key)
        finally:
            if _mounted(mountpoint):
                cmd = [unmount, "-u", "-z", str(mountpoint)] if unmount else ["umount", "-l", str(mountpoint)]
                if subprocess.run(cmd, capture_output=True, timeout=10, check=False).returncode != 0:
                    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=10, check=False)
            _stop(sshfs)  # exits by itself once unmounted; this only reaps it (or kills a stuck one)
