"""Digests of a file in one read pass, tied to the identity the file had when it was read."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hotfolder.liveness import progress
from hotfolder.transfer.files import CHUNK_SIZE, FileIdentity, changed, check_unchanged, open_error, open_regular

SUPPORTED_DIGESTS = ("md5", "sha256")


@dataclass(frozen=True)
class FileDigests:
    """Digests (lower-case hex) of the file as it was when ``identity`` was observed."""

    identity: FileIdentity
    md5: str | None
    sha256: str | None

    @property
    def md5_base64(self) -> str:
        """Base64 of the binary MD5: the form Content-MD5 and Visibuild's checksum want."""
        if self.md5 is None:
            raise ValueError("the MD5 was not computed for this file")
        return base64.b64encode(bytes.fromhex(self.md5)).decode("ascii")

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.identity.size,
            "mtime_ns": self.identity.mtime_ns,
            "ctime_ns": self.identity.ctime_ns,
            "ino": self.identity.ino,
            "md5": self.md5,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileDigests:
        return cls(
            identity=FileIdentity(
                size=int(d["size"]), mtime_ns=int(d["mtime_ns"]), ctime_ns=_int_or_none(d.get("ctime_ns")),
                ino=_int_or_none(d.get("ino")),
            ),
            md5=d.get("md5"),
            sha256=d.get("sha256"),
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def hash_file(path: Path, algorithms: Collection[str] = SUPPORTED_DIGESTS) -> FileDigests:
    """Compute every requested digest of ``path`` in ONE read pass.

    The identity returned is the one observed before reading, and it is checked again after
    (on the descriptor, for in-place writes, and on the path, for a replacement by rename).
    """
    unknown = set(algorithms) - set(SUPPORTED_DIGESTS)
    if unknown:
        raise ValueError(f"unsupported digest(s): {sorted(unknown)}")
    hashers = {name: hashlib.new(name) for name in SUPPORTED_DIGESTS if name in algorithms}

    fd, before = open_regular(path)
    identity = FileIdentity.of(before)
    with open(fd, "rb", buffering=0) as f:
        total = _read_into_hashers(path, f, list(hashers.values()), identity.size)
        after = FileIdentity.of(os.fstat(fd))
    if not identity.matches(after) or total != identity.size:
        raise changed(path, identity, after)
    check_unchanged(path, identity)

    return FileDigests(
        identity=identity,
        md5=hashers["md5"].hexdigest() if "md5" in hashers else None,
        sha256=hashers["sha256"].hexdigest() if "sha256" in hashers else None,
    )


def _read_into_hashers(path: Path, f: Any, hashers: list[Any], size: int) -> int:
    """Feed the whole file to every hasher; returns the byte count. One buffer, reused.

    Stops once more than ``size`` bytes came: the file grew, and a writer appending faster than we
    read would otherwise keep this loop going for as long as it writes.
    """
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    total = 0
    while True:
        try:
            n = f.readinto(buf)
        except OSError as exc:
            raise open_error(path, exc) from None
        if not n:
            return total
        chunk = view[:n]
        for h in hashers:
            h.update(chunk)  # hashlib releases the GIL for large updates
        total += n
        progress()  # a read that hangs (a dead mount) stops these: hotfolder.liveness
        if total > size:
            return total
