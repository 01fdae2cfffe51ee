"""Network mounts: the attribute cache read from the mount table, and the start-up warning."""

from __future__ import annotations

from pathlib import Path

from daemon.mountcache import attribute_cache
from daemon.watcher import mount_entry

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
    assert sshfs is not None and (sshfs.seconds, sshfs.source) == (20.0, "default dcache_timeout")
    quick = attribute_cache(*_entry(tmp_path, "/mnt/quick"))
    assert quick is not None and quick.seconds == 0.0
    assert attribute_cache(*_entry(tmp_path, "/home")) is None
