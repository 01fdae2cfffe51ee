"""A real Ceph RADOS Gateway on 127.0.0.1 for the tests: one monitor, one memstore OSD, radosgw.

Why a real S3 server: what goes wrong with a presigned URL (expiry, a changed signed header, a
body that does not match Content-MD5) is S3's own judgement, and our simulator could share our
misunderstandings. RGW enforces those rules (docs/vendors.md, S3) the way AWS does.

The three daemons run as plain processes, each in its own process group, with every path (data,
sockets, logs, keyring) inside one temporary folder, no authentication between them and objects
held in RAM. :func:`start_rgw` returns a running :class:`RGWServer`; :meth:`RGWServer.stop` kills
the processes and removes the folder. Start-up takes under 2 s on 2 cores (about 17 s with Ceph's
default 1 s paxos batching, which the config lowers).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_BINARIES = (
    "radosgw",
    "radosgw-admin",
    "ceph-mon",
    "ceph-osd",
    "ceph",
    "ceph-authtool",
    "monmaptool",
)
ACCESS_KEY = "HOTFOLDERTESTKEY0001"
SECRET_KEY = "hotfolder-test-secret-key-0000000000000001"
BUCKET = "hotfolder-test"
REGION = "us-east-1"
MEMSTORE_BYTES = 1024**3  # objects live in RAM: enough for a few test files
STARTUP_TIMEOUT = 90.0  # seconds; normally under 2
PR_SET_PDEATHSIG = 1


def missing_binaries() -> list[str]:
    return [name for name in REQUIRED_BINARIES if shutil.which(name) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ceph_conf(root: Path, mon_port: int, rgw_port: int, fsid: str) -> str:
    # Every line here was needed at least once; see S3-TEST-SERVER.md for the story behind each.
    return f"""\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
# Without crc modes radosgw hangs for 300 s (get_initial_auth_request returned -13).
ms mon client mode = crc
ms client mode = crc
ms mon service mode = crc
ms service mode = crc
ms mon cluster mode = crc
ms cluster mode = crc
ms bind ipv4 = true
ms bind ipv6 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 2000
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
osd max object name len = 460
osd max object namespace len = 64
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
keyring = {root}/keyring
mon data = {root}/mon/$name
osd data = {root}/osd/$name
rgw data = {root}/rgw/$name
mon data avail warn = 1
# Pools are created one by one at start; the default 1 s paxos batching makes each cost seconds.
paxos propose interval = 0.05
paxos min wait = 0.01
mon data avail crit = 0
debug ms = 0

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw dns name = 127.0.0.1
rgw dynamic resharding = false
rgw enable usage log = false
"""


@dataclass
class RGWServer:
    """A running RGW with one user and one bucket; presigns exactly as a vendor backend would."""

    root: Path
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    bucket: str = BUCKET
    region: str = REGION
    startup_seconds: float = 0.0
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _client: Any = field(default=None, repr=False)

    def s3_client(self) -> Any:
        if self._client is None:
            import botocore.session
            from botocore.config import Config

            self._client = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
        return self._client

    def presign_put(
        self,
        key: str,
        expires: int = 3600,
        content_md5: str | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A presigned PUT URL and the headers the uploader must send (they are signed)."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        headers: dict[str, str] = {}
        if content_md5 is not None:
            params["ContentMD5"] = content_md5
            headers["Content-MD5"] = content_md5
        if content_type is not None:
            params["ContentType"] = content_type
            headers["Content-Type"] = content_type
        if metadata:
            params["Metadata"] = dict(metadata)
            headers.update({f"x-amz-meta-{name}": value for name, value in metadata.items()})
        url = self.s3_client().generate_presigned_url("put_object", Params=params, ExpiresIn=expires)
        return url, headers

    def get_object_bytes(self, key: str) -> bytes:
        answer = self.s3_client().get_object(Bucket=self.bucket, Key=key)
        return bytes(answer["Body"].read())

    def head_object(self, key: str) -> dict[str, Any]:
        return dict(self.s3_client().head_object(Bucket=self.bucket, Key=key))

    def stop(self) -> None:
        for proc in reversed(self._processes):
            _kill_group(proc)
        self._processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: get SIGKILL when pytest dies, even by SIGKILL, so no daemon is left behind.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere teardown relies on :meth:`RGWServer.stop`.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Each daemon leads its own process group; end the group, politely first."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class _Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "ceph.conf"
        self.env = {**os.environ, "CEPH_CONF": str(self.conf)}
        self.processes: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [*args, "-c", str(self.conf)],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
            )
        return done.stdout.decode()

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = open(self.root / "log" / f"{name}.stdout", "wb")  # noqa: SIM115 - lives as long as the daemon
        proc = subprocess.Popen(
            [*args, "-c", str(self.conf), "-f"],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can end it and its children
            preexec_fn=_die_with_parent,
        )
        out.close()
        self.processes.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; logs in {self.root}/log")


def _wait_for_port(cluster: _Cluster, port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        cluster.check_alive()
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"radosgw did not open port {port} in time")


def _bootstrap(cluster: _Cluster, mon_port: int, rgw_port: int, deadline: float) -> None:
    root = cluster.root
    fsid = str(uuid.uuid4())
    for sub in ("run", "log", "mon/mon.a", "osd/osd.0", "rgw/client.rgw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cluster.conf.write_text(_ceph_conf(root, mon_port, rgw_port, fsid))
    keyring = str(root / "keyring")
    monmap = str(root / "monmap")

    cluster.run("ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.", "--cap", "mon", "allow *")
    subprocess.run(
        ["monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", monmap],
        check=True,
        capture_output=True,
    )
    cluster.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring)
    cluster.spawn("mon.a", "ceph-mon", "-i", "a")

    osd_id = cluster.run("ceph", "osd", "create", timeout=max(1.0, deadline - time.monotonic())).strip()
    cluster.run("ceph-osd", "-i", osd_id, "--mkfs")
    # Under a host bucket in the default root (created on the way), so CRUSH can place PGs on our OSD.
    cluster.run("ceph", "osd", "crush", "add", f"osd.{osd_id}", "1.0", "host=host0", "root=default")
    cluster.spawn("osd.0", "ceph-osd", "-i", osd_id)

    cluster.spawn("client.rgw", "radosgw", "-n", "client.rgw", "--no-mon-config")
    _wait_for_port(cluster, rgw_port, deadline)
    cluster.run(
        "radosgw-admin",
        "user",
        "create",
        "--uid=test",
        "--display-name=hotfolder tests",
        f"--access-key={ACCESS_KEY}",
        f"--secret-key={SECRET_KEY}",
    )


def start_rgw(timeout: float = STARTUP_TIMEOUT) -> RGWServer:
    """Start mon, OSD and radosgw under a fresh temp folder, create the user and the bucket."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="hotfolder-rgw-"))
    cluster = _Cluster(root)
    server = RGWServer(root=root, endpoint="", _processes=cluster.processes)
    try:
        mon_port, rgw_port = free_port(), free_port()
        server.endpoint = f"http://127.0.0.1:{rgw_port}"
        _bootstrap(cluster, mon_port, rgw_port, started + timeout)
        server.s3_client().create_bucket(Bucket=server.bucket)
    except BaseException as exc:
        logs = _log_tail(root)
        server.stop()
        if isinstance(exc, Exception):
            raise RuntimeError(f"could not start Ceph RGW: {exc}\n{logs}") from exc
        raise
    server.startup_seconds = time.monotonic() - started
    return server


def _log_tail(root: Path, lines: int = 15) -> str:
    tails = []
    for log in sorted((root / "log").glob("*")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(tails)
