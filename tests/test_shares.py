"""Files arriving the way scanners send them: through a real Samba server and a real vsftpd on
127.0.0.1 into the daemon's inbox, written by real clients (smbprotocol, smbclient, ftplib),
including writers that pause, pre-size and fill, or drop the connection. The user's check each
time: the vendor holds exactly the file's final bytes, once."""

from __future__ import annotations

import ftplib
import hashlib
import io
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder.service import Daemon
from tests import formats, harness
from tests.harness import FIELD, Site, wait_for, write_config
from tests.netshares import FtpServer, SmbShare, ftp_server, samba_share, sshfs_mount, writable_for_ftp

site = harness.site  # the fixture: a simulator with records rec-1 and rec-2, and a site beside it

# sshfs's attribute and listing cache, shorter than its 20 s default so that a test's wait stays
# bounded, and still longer than the sshfs cases' 1 s settle: lstat (and a read) answers stale
# figures while the writer writes, which is the case tested.
SSHFS_CACHE = 3.0
PAUSE = 1.0  # seconds between a writer's chunks: longer than settle (300 ms), as a scanner's page


@pytest.fixture
def daemon(site: Site) -> Iterator[Daemon]:
    write_config(site.root, site.sandbox.url, watch={"check_complete": True, "incomplete_timeout": "3s"})
    running = Daemon(site.settings())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def share(site: Site, daemon: Daemon) -> Iterator[SmbShare]:
    import smbclient

    (site.inbox / "fulcrum" / "rec-1").mkdir(parents=True, exist_ok=True)
    with samba_share(site.inbox, site.root / "smb") as served:
        smbclient.register_session(served.host, username=served.user, password=served.password, port=served.port)
        try:
            yield served
        finally:
            smbclient.reset_connection_cache()


@pytest.fixture
def ftp(site: Site, daemon: Daemon) -> Iterator[FtpServer]:
    writable_for_ftp(site.inbox / "fulcrum" / "rec-1")
    with ftp_server(site.inbox, site.root / "ftp") as served:
        yield served


def _holds_exactly(site: Site, name: str, data: bytes, timeout: float = 30) -> None:
    done = site.done / "fulcrum" / "rec-1" / name
    wait_for(done.exists, timeout=timeout, what=f"{name} in done/")
    attached = site.sandbox.fulcrum.record("rec-1")["form_values"].get(FIELD) or []
    assert [a["name"] for a in attached] == [name]
    blob = site.sandbox.fulcrum.attachment_bytes(attached[0]["attachment_id"])
    assert hashlib.sha256(blob).hexdigest() == hashlib.sha256(data).hexdigest(), "the vendor's copy differs"
    assert done.read_bytes() == data
    assert not any(site.failed.rglob("*"))


def _pdf() -> bytes:
    return formats.pdf(os.urandom(400_000))


# --- Samba ----------------------------------------------------------------------------------------


def test_smbclient_put(site: Site, share: SmbShare, tmp_path: Path) -> None:
    data = _pdf()
    local = tmp_path / "scan.pdf"
    local.write_bytes(data)
    subprocess.run(
        ["smbclient", f"//{share.host}/{share.share}", "-p", str(share.port), "-U", f"{share.user}%{share.password}",
         "-c", f"cd fulcrum/rec-1; put {local} scan.pdf"], check=True, capture_output=True, timeout=30,
    )
    _holds_exactly(site, "scan.pdf", data)


def test_smb_writer_keeping_the_handle_open_and_pausing(site: Site, share: SmbShare) -> None:
    import smbclient

    data = _pdf()
    with smbclient.open_file(share.unc("fulcrum/rec-1/scan.pdf"), mode="wb", port=share.port) as f:
        for start in range(0, len(data), len(data) // 4):
            f.write(data[start:start + len(data) // 4])
            f.flush()
            time.sleep(PAUSE)
    _holds_exactly(site, "scan.pdf", data)


def test_smb_writer_setting_the_size_first_then_filling(site: Site, share: SmbShare) -> None:
    """Explorer, robocopy and CopyFile set the end of file first: the size never changes."""
    import smbclient

    data = _pdf()
    with smbclient.open_file(share.unc("fulcrum/rec-1/scan.pdf"), mode="wb", port=share.port) as f:
        f.truncate(len(data))
        f.seek(0)
        for start in range(0, len(data), len(data) // 4):
            f.write(data[start:start + len(data) // 4])
            f.flush()
            time.sleep(PAUSE)
    _holds_exactly(site, "scan.pdf", data)


def test_smb_tmp_file_renamed_into_place(site: Site, share: SmbShare) -> None:
    import smbclient

    data = _pdf()
    with smbclient.open_file(share.unc("fulcrum/rec-1/scan.pdf.tmp"), mode="wb", port=share.port) as f:
        f.write(data[:1000])
        time.sleep(PAUSE)
        f.write(data[1000:])
    smbclient.rename(share.unc("fulcrum/rec-1/scan.pdf.tmp"), share.unc("fulcrum/rec-1/scan.pdf"), port=share.port)
    _holds_exactly(site, "scan.pdf", data)


def test_smb_writer_setting_the_mtime_into_the_past(site: Site, share: SmbShare) -> None:
    import smbclient

    data = _pdf()
    unc = share.unc("fulcrum/rec-1/scan.pdf")
    with smbclient.open_file(unc, mode="wb", port=share.port) as f:
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(PAUSE)
        f.write(data[len(data) // 2:])
    day_ago = time.time() - 86_400
    smbclient.utime(unc, times=(day_ago, day_ago), port=share.port)
    _holds_exactly(site, "scan.pdf", data)


# --- FTP ------------------------------------------------------------------------------------------


class _PausingReader(io.RawIOBase):
    """What a slow link looks like to ``storbinary``: blocks that arrive with pauses between them."""

    def __init__(self, data: bytes, pieces: int, pause: float) -> None:
        self._data, self._step, self._pause, self._at = data, max(1, len(data) // pieces), pause, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._at >= len(self._data):
            return b""
        if self._at:
            time.sleep(self._pause)
        block = self._data[self._at:self._at + self._step]
        self._at += len(block)
        return block


def test_ftp_stor_that_pauses(site: Site, ftp: FtpServer) -> None:
    data = _pdf()
    client = ftplib.FTP()
    client.connect(ftp.host, ftp.port, timeout=30)
    client.login()
    client.storbinary("STOR fulcrum/rec-1/scan.pdf", _PausingReader(data, 4, PAUSE), blocksize=len(data))
    client.quit()
    _holds_exactly(site, "scan.pdf", data)


def test_ftp_connection_dropped_mid_stor_is_never_attached(site: Site, ftp: FtpServer) -> None:
    data = _pdf()
    client = ftplib.FTP()
    client.connect(ftp.host, ftp.port, timeout=30)
    client.login()
    client.voidcmd("TYPE I")
    conn = client.transfercmd("STOR fulcrum/rec-1/scan.pdf")
    conn.sendall(data[: len(data) // 3])
    time.sleep(0.3)
    # A cable pulled: both connections reset, no orderly end of the upload.
    for sock in (conn, client.sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    failed = site.failed / "fulcrum" / "rec-1" / "scan.pdf"
    wait_for(failed.exists, timeout=30, what="the partial upload in failed/")
    assert "PDF has no %%EOF" in (failed.parent / "scan.pdf.error.json").read_text()
    assert site.sandbox.fulcrum.attachments() == []
    assert not (site.done / "fulcrum" / "rec-1").exists() or not any((site.done / "fulcrum" / "rec-1").iterdir())


# --- sshfs ----------------------------------------------------------------------------------------


@pytest.fixture
def sshfs_inbox(site: Site) -> Iterator[Path]:
    """The inbox is an sshfs mount of a folder on an sshd: written on the server, polled here."""
    server = site.root / "server"
    (server / "fulcrum" / "rec-1").mkdir(parents=True)
    with sshfs_mount(server, site.inbox, site.root / "ssh", options=[f"dcache_timeout={SSHFS_CACHE:g}"]):
        yield server


def _sshfs_daemon(site: Site, **retry: str | int) -> Daemon:
    # sshfs keeps dcache_timeout out of the mount table, so the admin states it (the README says so).
    write_config(site.root, site.sandbox.url,
                 watch={"method": "auto", "check_complete": True, "settle": "1s", "attribute_cache": f"{SSHFS_CACHE}s"},
                 **({"retry": retry} if retry else {}))
    daemon = Daemon(site.settings())
    daemon.start()
    assert daemon.watcher.mode == "polling"
    return daemon


def test_sshfs_writer_outlasting_the_retry_budget_gets_its_final_bytes_attached(
    site: Site, sshfs_inbox: Path
) -> None:
    """sshfs answers lstat and reads from its cache, so a file the server still writes looks quiet and
    whole; waiting the cache out on top of settle sees it grow. Waiting spends no retry (budget: 2)."""
    daemon = _sshfs_daemon(site, attempts=2, backoff="100ms", max_backoff="200ms")
    try:
        data = os.urandom(600_000)
        with open(sshfs_inbox / "fulcrum" / "rec-1" / "log.bin", "wb") as f:
            for start in range(0, len(data), len(data) // 12):
                f.write(data[start:start + len(data) // 12])
                f.flush()
                time.sleep(0.4)  # shorter than settle, as a steady writer; 12 pieces over about 5 s
        _holds_exactly(site, "log.bin", data, timeout=SSHFS_CACHE * 4 + 30)
    finally:
        daemon.stop()


def test_a_file_the_server_writes_on_after_its_upload_is_not_lost_when_it_leaves_the_mount(
    site: Site, sshfs_inbox: Path
) -> None:
    """A writer pausing longer than settle and the cache (no test can see that from here) gets its
    first part uploaded; it writes on at once, while the link is held for less than the cache lasts.
    Before the move deletes the original, the daemon waits the cache out, sees the change and sends
    the whole file: the vendor holds the final bytes once, done/ holds them, and the server's file is
    gone only once copied whole (without the wait, the old view was copied and the rest lost)."""
    site.sandbox.add_fault("GET", r"^/api/v2/records/rec-1", count=1, action="delay", delay=0.5)
    daemon = _sshfs_daemon(site)
    try:
        first, rest = os.urandom(200_000), os.urandom(300_000)
        with open(sshfs_inbox / "fulcrum" / "rec-1" / "log.bin", "wb") as f:
            f.write(first)
            f.flush()
            wait_for(lambda: any(a["uploaded"] for a in site.sandbox.fulcrum.attachments()),
                     timeout=SSHFS_CACHE * 4 + 30, what="the first part at the vendor")
            f.write(rest)
        _holds_exactly(site, "log.bin", first + rest, timeout=SSHFS_CACHE * 6 + 30)
        wait_for(lambda: site.jobs()[0].state.value == "done", what="the job to finish")
        assert not (sshfs_inbox / "fulcrum" / "rec-1" / "log.bin").exists()
    finally:
        daemon.stop()


def test_a_pdf_written_through_the_sshfs_mount_is_moved_to_a_local_done(site: Site, sshfs_inbox: Path) -> None:
    daemon = _sshfs_daemon(site)
    try:
        data = _pdf()
        with open(site.inbox / "fulcrum" / "rec-1" / "scan.pdf", "wb") as f:
            f.write(data[:1000])
            f.flush()
            time.sleep(PAUSE)
            f.write(data[1000:])
        _holds_exactly(site, "scan.pdf", data, timeout=SSHFS_CACHE * 4 + 30)
        assert not (sshfs_inbox / "fulcrum" / "rec-1" / "scan.pdf").exists()  # gone from the server
    finally:
        daemon.stop()
