"""Reading a file that is to be sent: its identity, opened safely, and its bytes exactly as hashed.

A file is never followed through a symlink (``O_NOFOLLOW``) and only regular files are read, so a link
planted in the inbox cannot make us upload ``/etc/shadow``. Every step checks the file against the
:class:`FileIdentity` recorded when it was hashed, and says ``FILE_CHANGED`` otherwise, so the pipeline
hashes again instead of sending mixed bytes.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from hotfolder.errors import StepError
from hotfolder.liveness import progress
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer.progress import bytes_read

# Reads (and so the pieces of every request body) are this size: large enough that a read costs little
# per byte, small enough that memory stays flat at any file size.
CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class FileIdentity:
    """What we believe identifies a file's content without reading it.

    Size and mtime catch a writer; ctime catches one that put the mtime back (``touch -r``, a copy
    that keeps times) and the inode a different file renamed over the path with the same size and
    times. ctime and inode are None where they were not recorded (jobs journalled before they
    were); an unknown part is not compared.
    """

    size: int
    mtime_ns: int
    ctime_ns: int | None = None
    ino: int | None = None

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino)

    def differences(self, now: FileIdentity) -> list[str]:
        """What differs in ``now`` from this identity, in words; empty when it is the same file."""
        found = []
        for name in ("size", "mtime_ns", "ctime_ns", "ino"):
            mine, theirs = getattr(self, name), getattr(now, name)
            if mine is not None and theirs is not None and mine != theirs:
                found.append(f"{name} {mine} → {theirs}")
        return found

    def matches(self, now: FileIdentity) -> bool:
        return not self.differences(now)


def open_error(path: Path, exc: OSError) -> StepError:
    """Map an OSError from opening, stat-ing or reading ``path`` to what it means for the job."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return StepError(OutcomeKind.FILE_GONE, f"{path.name}: file is gone")
    if exc.errno == errno.ELOOP:
        return StepError(OutcomeKind.PERMANENT, f"{path.name}: is a symbolic link, refused")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StepError(OutcomeKind.PERMANENT, f"{path.name}: permission denied")
    # EIO, ESTALE, ENOMEM…: a network mount hiccup is worth another try.
    return StepError(OutcomeKind.TRANSIENT, f"{path.name}: {exc.strerror or exc}")


def open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open without following a final symlink; refuse anything but a regular file.

    O_NONBLOCK keeps a FIFO dropped into the inbox from blocking the open forever; it changes
    nothing for regular files.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise open_error(path, exc) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise open_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise StepError(OutcomeKind.PERMANENT, f"{path.name}: not a regular file, refused")
    return fd, st


def changed(path: Path, expected: FileIdentity, now: FileIdentity) -> StepError:
    """FILE_CHANGED, naming what differs."""
    what = ", ".join(expected.differences(now)) or "its bytes moved while it was read"
    return StepError(OutcomeKind.FILE_CHANGED, f"{path.name}: file changed ({what})")


def check_unchanged(path: Path, expected: FileIdentity) -> None:
    """Raise FILE_GONE if ``path`` is missing, FILE_CHANGED if it is no longer the file we hashed."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        raise open_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise StepError(OutcomeKind.FILE_CHANGED, f"{path.name}: no longer a regular file")
    now = FileIdentity.of(st)
    if not expected.matches(now):
        raise changed(path, expected, now)


def open_checked(path: Path, expected: FileIdentity) -> BinaryIO:
    """Open ``path`` for reading (no symlinks) only if it still matches ``expected``.

    The identity is taken from the open descriptor, so a swap between the check and the
    open cannot slip in. Unbuffered: reads go straight to the caller's chunks, no extra copy.
    """
    fd, st = open_regular(path)
    now = FileIdentity.of(st)
    if not expected.matches(now):
        os.close(fd)
        raise changed(path, expected, now)
    return cast(BinaryIO, open(fd, "rb", buffering=0))  # the caller closes it


def iter_file(f: BinaryIO, size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield exactly ``size`` bytes from ``f``; FILE_CHANGED if it ends early.

    Bytes beyond ``size`` are never read: the length was promised in Content-Length, and a
    file that grew is caught by the caller's check after the transfer.
    """
    remaining = size
    while remaining > 0:
        data = f.read(min(chunk_size, remaining))
        if not data:
            raise StepError(
                OutcomeKind.FILE_CHANGED,
                f"file shrank while reading: ended after {size - remaining} of {size} bytes",
            )
        remaining -= len(data)
        bytes_read(len(data))
        progress()  # each chunk sent is progress; a send that hangs is not (hotfolder.liveness)
        yield data


def iter_file_checked(
    f: BinaryIO, path: Path, expected: FileIdentity, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """:func:`iter_file`, then FILE_CHANGED if the open file no longer matches ``expected``.

    For a body that frames the file (a JSON document, a form): the check runs before the caller sends
    what closes the frame, so the server never receives a complete document of mixed bytes.
    """
    yield from iter_file(f, expected.size, chunk_size)
    now = FileIdentity.of(os.fstat(f.fileno()))
    if not expected.matches(now):
        raise changed(path, expected, now)
