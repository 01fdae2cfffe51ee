"""How long a network mount's attribute cache may hide a change, read from its options.

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

from collections.abc import Mapping
from dataclasses import dataclass, replace

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
