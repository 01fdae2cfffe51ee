"""How long a network mount's attribute cache may hide a change from polling, read from its options.

Polling asks ``lstat``; on a network mount the client answers from its attribute cache, so a file's
new size or a folder's new entry shows only when the cached answer expires. A cache longer than
``watch.settle`` means settle is measured on old figures (correctness then rests on the writer and
tail tests and on the hash step's before/after check); this says so at start, with the remedy.

Defaults, from the mount manuals: NFS caches file attributes ``acregmin``..``acregmax`` (3..60 s) and
folder attributes ``acdirmin``..``acdirmax`` (30..60 s), all set at once by ``actimeo``, off with
``noac``; CIFS caches ``actimeo`` (1 s; ``acregmax``/``acdirmax`` on newer kernels); sshfs caches
attributes and listings for ``dcache_timeout`` (20 s), options that sshfs keeps to itself and the
mount table does not show, so its default is assumed unless ``-o dcache_timeout=N`` appears.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class AttributeCache:
    seconds: float
    source: str  # the option it comes from, or "default"
    remedy: str


def _seconds(options: Mapping[str, str], *names: str) -> tuple[float, str] | None:
    for name in names:
        value = options.get(name)
        if value:
            try:
                return float(value), name
            except ValueError:
                continue
    return None


def attribute_cache(fstype: str, options: Mapping[str, str]) -> AttributeCache | None:
    """The longest time ``lstat`` may answer from cache on this mount; None where none is known."""
    if fstype in ("nfs", "nfs4"):
        if "noac" in options:
            return AttributeCache(0.0, "noac", "")
        found = _seconds(options, "acregmax", "actimeo") or (60.0, "default acregmax")
        folder = _seconds(options, "acdirmax", "actimeo") or (60.0, "default acdirmax")
        longest = max(found, folder)
        return AttributeCache(longest[0], longest[1], "mount with a smaller actimeo (or noac)")
    if fstype in ("cifs", "smb3"):
        found = _seconds(options, "acregmax", "acdirmax", "actimeo") or (1.0, "default actimeo")
        return AttributeCache(found[0], found[1], "mount with a smaller actimeo")
    if fstype in ("fuse.sshfs", "sshfs"):
        found = _seconds(options, "dcache_timeout") or (20.0, "default dcache_timeout")
        return AttributeCache(found[0], found[1], "mount with -o dcache_timeout=1 (or -o dir_cache=no)")
    return None
