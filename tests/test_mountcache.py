"""Network mounts: the attribute cache read from the mount table, and the start-up warning."""

from __future__ import annotations

from pathlib import Path

from hotfolder.watch.mounts import attribute_cache, inbox_attribute_cache, mount_entry

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    "40 22 0:40 / /srv/scans rw,relatime - nfs4 fs:/scans rw,vers=4.2,acregmax=90,acdirmax=30\n"
    "41 22 0:41 / /mnt/share rw - cifs //fs/share rw,actimeo=1\n"
    "42 22 0:42 / /mnt/ssh rw,nosuid - fuse.sshfs root@fs:/in rw,user_id=0\n"
    "43 22 0:43 / /mnt/quick rw - nfs4 fs:/q rw,noac\n"
)


def _entry(tmp_path: Path, path: str) -> tuple[str, dict[str, str]]:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    entry = mount_entry(Path(path), table)
    assert entry is not None
    return entry


def test_the_longest_attribute_cache_of_each_network_mount_is_found(tmp_path: Path) -> None:
    nfs = attribute_cache(*_entry(tmp_path, "/srv/scans/inbox"))
    assert nfs is not None and (nfs.seconds, nfs.source) == (90.0, "acregmax")
    cifs = attribute_cache(*_entry(tmp_path, "/mnt/share/inbox"))
    assert cifs is not None and cifs.seconds == 1.0
    sshfs = attribute_cache(*_entry(tmp_path, "/mnt/ssh/inbox"))
    # sshfs's own cache, and the kernel's FUSE attribute cache (1 s) in front of it.
    assert sshfs is not None and (sshfs.seconds, sshfs.source) == (21.0, "default dcache_timeout")
    quick = attribute_cache(*_entry(tmp_path, "/mnt/quick"))
    assert quick is not None and quick.seconds == 0.0
    assert attribute_cache(*_entry(tmp_path, "/home")) is None


def test_settle_waits_the_cache_out_only_where_an_open_cannot_bypass_it(tmp_path: Path) -> None:
    """NFS (close-to-open) and SMB answer an open from the server; sshfs and NFS with nocto do not."""
    nfs = attribute_cache(*_entry(tmp_path, "/srv/scans/inbox"))
    cifs = attribute_cache(*_entry(tmp_path, "/mnt/share/inbox"))
    sshfs = attribute_cache(*_entry(tmp_path, "/mnt/ssh/inbox"))
    nocto = attribute_cache("nfs4", {"nocto": "", "actimeo": "5"})
    assert nfs is not None and nfs.revalidated_on_open and nfs.settle_lag == 0.0
    assert cifs is not None and cifs.settle_lag == 0.0
    assert sshfs is not None and not sshfs.revalidated_on_open and sshfs.settle_lag == 21.0
    assert nocto is not None and nocto.settle_lag == 5.0


def test_watch_attribute_cache_replaces_what_the_mount_table_cannot_show(tmp_path: Path) -> None:
    sshfs = attribute_cache(*_entry(tmp_path, "/mnt/ssh/inbox"), configured=3.0)
    assert sshfs is not None and (sshfs.seconds, sshfs.source) == (4.0, "watch.attribute_cache")
    nfs = attribute_cache(*_entry(tmp_path, "/srv/scans/inbox"), configured=10.0)
    assert nfs is not None and nfs.seconds == 10.0
    assert attribute_cache(*_entry(tmp_path, "/home"), configured=10.0) is None  # local: no cache


def test_the_inbox_cache_is_none_on_a_local_file_system(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    assert inbox_attribute_cache(Path("/home/scans"), mountinfo=table) is None
    cache = inbox_attribute_cache(Path("/mnt/ssh/inbox"), 2.0, mountinfo=table)
    assert cache is not None and cache.seconds == 3.0
