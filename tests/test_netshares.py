"""The share fixtures themselves: each real server accepts a real client's file end to end."""

from __future__ import annotations

import ftplib
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netshares import FtpServer, SmbShare, SshfsMount, ftp_server, samba_share, sshfs_mount, writable_for_ftp


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


@pytest.fixture
def smb(inbox: Path, tmp_path: Path) -> Iterator[SmbShare]:
    with samba_share(inbox, tmp_path / "smb") as share:
        yield share


@pytest.fixture
def ftp(inbox: Path, tmp_path: Path) -> Iterator[FtpServer]:
    (inbox / "rec-1").mkdir()  # there before the start: ftp_server hands it to the ftp user
    with ftp_server(inbox, tmp_path / "ftp") as server:
        yield server


@pytest.fixture
def sshfs(tmp_path: Path) -> Iterator[SshfsMount]:
    with sshfs_mount(tmp_path / "server", tmp_path / "mnt", tmp_path / "ssh") as mount:
        yield mount


def test_smbclient_cli_put_lands_in_folder(smb: SmbShare, inbox: Path, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    local = tmp_path / "local.bin"
    local.write_bytes(data)
    subprocess.run(
        ["smbclient", f"//{smb.host}/{smb.share}", "-p", str(smb.port), "-U", f"{smb.user}%{smb.password}",
         "-c", f"put {local} scan.bin"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert (inbox / "scan.bin").read_bytes() == data


def test_smbprotocol_writes_into_a_subfolder(smb: SmbShare, inbox: Path) -> None:
    import smbclient

    cache: dict[str, object] = {}  # a private connection cache: no state shared with other tests
    smbclient.register_session(
        smb.host, username=smb.user, password=smb.password, port=smb.port, connection_cache=cache
    )
    try:
        data = os.urandom(200_000)
        smbclient.mkdir(smb.unc("sub"), port=smb.port, connection_cache=cache)
        with smbclient.open_file(smb.unc("sub/x.bin"), mode="wb", port=smb.port, connection_cache=cache) as f:
            f.write(data)
        assert (inbox / "sub" / "x.bin").read_bytes() == data
    finally:
        smbclient.reset_connection_cache(connection_cache=cache)


def test_unc_path() -> None:
    share = SmbShare("127.0.0.1", 4450, "inbox", "root", "pw")
    assert share.unc("a/b.pdf") == r"\\127.0.0.1\inbox\a\b.pdf"
    assert share.unc("/a\\b.pdf") == r"\\127.0.0.1\inbox\a\b.pdf"
    assert share.unc() == r"\\127.0.0.1\inbox"


def test_ftp_stor_and_mkdir_land_in_folder(ftp: FtpServer, inbox: Path) -> None:
    writable_for_ftp(inbox / "later")  # a folder made by root after the start
    data = os.urandom(300_000)
    with ftplib.FTP() as client:
        client.connect(ftp.host, ftp.port, timeout=10)
        client.login(ftp.user, ftp.password)
        assert client.pwd() == ftp.path
        client.storbinary("STOR rec-1/scan.bin", io.BytesIO(data))
        client.mkd("rec-1/sub")
        client.storbinary("STOR rec-1/sub/x.bin", io.BytesIO(b"in a subfolder"))
        client.storbinary("STOR later/y.bin", io.BytesIO(b"y"))
        # The chroot root itself stays read-only (vsftpd refuses a writable one): the documented layout.
        with pytest.raises(ftplib.error_perm, match=r"^553"):
            client.storbinary("STOR top.bin", io.BytesIO(b"no"))
    assert (inbox / "rec-1" / "scan.bin").read_bytes() == data
    assert (inbox / "rec-1" / "sub" / "x.bin").read_bytes() == b"in a subfolder"
    assert (inbox / "later" / "y.bin").read_bytes() == b"y"


def test_sshfs_both_directions(sshfs: SshfsMount) -> None:
    (sshfs.server_folder / "from-server.bin").write_bytes(b"server side")
    assert (sshfs.mountpoint / "from-server.bin").read_bytes() == b"server side"
    data = os.urandom(300_000)
    (sshfs.mountpoint / "from-client.bin").write_bytes(data)
    assert (sshfs.server_folder / "from-client.bin").read_bytes() == data
