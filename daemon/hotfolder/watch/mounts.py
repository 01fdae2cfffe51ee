"""Where the inbox lives: its mount (from the mount table), whether it is a network file system, and
how long the mount's attribute cache may hide a change, read from its options.

Polling asks ``lstat``; on a network mount the client answers from its attribute cache, so a file's
new size or a folder's new entry shows only when the cached answer expires. What that means for
"is this file finished?" depends on whether opening the file asks the server afresh:

* NFS (close-to-open consistency, unless mounted ``nocto``) revalidates a file's attributes when it
  is opened, and CIFS/SMB3 gets them from the server with every open (an SMB2 CREATE answers them).
  There a look through ``open`` + ``fstat`` is fresh, and the watcher takes one before it hands a
  settled file over.
* sshfs does not: its open answers from the same cache as ``lstat`` (and the kernel's FUSE attribute
  cache, 1 s, sits in front of it), so a file that the server still writes can be seen through it as
  a consistent but old view, size and bytes alike. The only sound rule there is to wait the cache
  out: figures that held for ``settle`` plus the cache's length were fetched afresh at least
  ``settle`` apart, and the move off the mount waits the cache out after the upload before it
  trusts that the file is still the one sent.

Defaults, from the mount manuals: NFS caches file attributes ``acregmin``..``acregmax`` (3..60 s) and
folder attributes ``acdirmin``..``acdirmax`` (30..60 s), all set at once by ``actimeo``, off with
``noac``; CIFS caches ``actimeo`` (1 s; ``acregmax``/``acdirmax`` on newer kernels); sshfs caches
attributes and listings for ``dcache_timeout`` (20 s), options that sshfs keeps to itself and the
mount table does not show, so its default is assumed unless ``watch.attribute_cache`` says otherwise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

# libfuse's default attribute timeout: the kernel answers a FUSE file's stat from its own cache
# for this long before it asks sshfs, whose cache then answers.
FUSE_KERNEL_ATTR_TIMEOUT = 1.0
_SSHFS_TYPES = ("fuse.sshfs", "sshfs")


@dataclass(frozen=True)
class AttributeCache:
    seconds: float  # the longest an lstat or a folder listing may lag behind the server
    source: str  # the option it comes from, "default", or "watch.attribute_cache"
    remedy: str
    revalidated_on_open: bool  # open() asks the server afresh (NFS close-to-open, SMB CREATE)

    @property
    def settle_lag(self) -> float:
        """What settle must add so that its quiet period is measured on fresh figures: the whole
        cache where nothing can bypass it, nothing where an open does."""
        return 0.0 if self.revalidated_on_open else self.seconds


def _seconds(options: Mapping[str, str], *names: str) -> tuple[float, str] | None:
    for name in names:
        value = options.get(name)
        if value:
            try:
                return float(value), name
            except ValueError:
                continue
    return None


def attribute_cache(fstype: str, options: Mapping[str, str], configured: float | None = None) -> AttributeCache | None:
    """The longest time ``lstat`` may answer from cache on this mount; None where none is known.

    ``configured`` (``watch.attribute_cache``) replaces what the options say: sshfs's own options
    never reach the mount table.
    """
    cache = _from_options(fstype, options)
    if cache is None or configured is None:
        return cache
    kernel = FUSE_KERNEL_ATTR_TIMEOUT if fstype in _SSHFS_TYPES else 0.0
    return replace(cache, seconds=configured + kernel, source="watch.attribute_cache")


def _from_options(fstype: str, options: Mapping[str, str]) -> AttributeCache | None:
    if fstype in ("nfs", "nfs4"):
        if "noac" in options:
            return AttributeCache(0.0, "noac", "", revalidated_on_open=True)
        found = _seconds(options, "acregmax", "actimeo") or (60.0, "default acregmax")
        folder = _seconds(options, "acdirmax", "actimeo") or (60.0, "default acdirmax")
        longest = max(found, folder)
        return AttributeCache(longest[0], longest[1], "mount with a smaller actimeo (or noac)",
                              revalidated_on_open="nocto" not in options)
    if fstype in ("cifs", "smb3"):
        found = _seconds(options, "acregmax", "acdirmax", "actimeo") or (1.0, "default actimeo")
        return AttributeCache(found[0], found[1], "mount with a smaller actimeo", revalidated_on_open=True)
    if fstype in _SSHFS_TYPES:
        found = _seconds(options, "dcache_timeout") or (20.0, "default dcache_timeout")
        return AttributeCache(
            found[0] + FUSE_KERNEL_ATTR_TIMEOUT, found[1],
            "mount with -o dcache_timeout=1 (or -o dir_cache=no) and set watch.attribute_cache to match",
            revalidated_on_open=False,
        )
    return None


# --- the mount table ----------------------------------------------------------------------------

# Mounts where the kernel does not see writes made by other machines, so inotify stays silent.
NETWORK_FS_TYPES: frozenset[str] = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "smb", "ncpfs", "ncp", "afs", "coda", "9p",
    "ceph", "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs", "gfs2", "ocfs2",
    "davfs", "fuse.davfs2", "fuse.sshfs", "sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.juicefs", "fuse.mfs", "fuse.lizardfs",
    # Host-to-guest shared folders: changes made on the host do not raise inotify events in the guest.
    "vboxsf", "virtiofs", "fuse.vmhgfs-fuse", "prl_fs",
})

METHODS = ("auto", "native", "polling")

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape_mount_field(field: bytes) -> bytes:
    # The kernel writes space, tab, newline and backslash in mountinfo as \040, \011, \012, \134.
    return _OCTAL_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), field)


def _mount_contains(mount_point: bytes, target: bytes) -> bool:
    return mount_point == b"/" or target == mount_point or target.startswith(mount_point + b"/")


def mount_entry(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> tuple[str, dict[str, str]] | None:
    """File system type and options (per-mount and super-block, ``name`` or ``name=value``) of the
    longest mount point containing ``path``; None if it cannot be told."""
    try:
        text = mountinfo.read_bytes()
    except OSError:
        return None
    target = os.fsencode(os.path.realpath(path))
    best_len, best = -1, None
    for line in text.splitlines():
        # id parent major:minor root mount-point options [optional...] - fstype source super-options
        fields = line.split()
        try:
            sep = fields.index(b"-", 6)
        except ValueError:
            continue
        if sep + 1 >= len(fields):
            continue
        mount_point = _unescape_mount_field(fields[4])
        # ">=": a later mount on the same point hides the earlier one.
        if _mount_contains(mount_point, target) and len(mount_point) >= best_len:
            best_len, best = len(mount_point), fields
            best_sep = sep
    if best is None:
        return None
    options: dict[str, str] = {}
    for group in (best[5], best[best_sep + 3] if best_sep + 3 < len(best) else b""):
        for option in os.fsdecode(_unescape_mount_field(group)).split(","):
            name, _, value = option.partition("=")
            if name:
                options[name] = value
    return os.fsdecode(_unescape_mount_field(best[best_sep + 1])), options


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """File system type of the longest mount point containing ``path``; None if it cannot be told."""
    entry = mount_entry(path, mountinfo)
    return None if entry is None else entry[0]


def choose_method(method: str, path: Path, *, mountinfo: Path = Path("/proc/self/mountinfo")) -> str:
    """"native" or "polling"; "auto" polls on a network file system, where inotify hears nothing."""
    if method not in METHODS:
        raise ValueError(f"watch method must be one of {', '.join(METHODS)}, not {method!r}")
    if method != "auto":
        return method
    return "polling" if filesystem_type(path, mountinfo) in NETWORK_FS_TYPES else "native"


def inbox_attribute_cache(
    inbox: Path, configured: float | None = None, *, mountinfo: Path = Path("/proc/self/mountinfo")
) -> AttributeCache | None:
    """The attribute cache of the network mount holding ``inbox``; None where it is local."""
    entry = mount_entry(inbox, mountinfo)
    if entry is None or entry[0] not in NETWORK_FS_TYPES:
        return None
    return attribute_cache(entry[0], entry[1], configured)
