"""Moving a finished file to done/ or failed/ without ever losing or overwriting one.

Theory of operation
-------------------
The promise is: at every instant the file's bytes exist under at least one name, and no
existing file is ever replaced. The order of operations gives that promise:

* Same filesystem: ``link(src, dest)`` then ``unlink(src)``. ``link`` refuses an existing
  name (EEXIST), so a name that appeared after it was planned is skipped, not overwritten.
  The destination folder is fsynced *before* ``src`` is unlinked, so a power cut can
  leave both names (a crash ``finish_interrupted_move`` repairs) but never neither.
* Filesystems without hard links (some FUSE/SMB mounts): ``rename`` with
  ``RENAME_NOREPLACE`` where the kernel offers it; otherwise a check that the name is free
  followed by ``rename``. That last form has a small race: a file created under the same
  name between the check and the rename would be replaced. Nothing in hotfolder writes
  into done/ or failed/ but this module, so the race needs an outside writer.
* Across filesystems (EXDEV): copy into a hidden temp file in the destination folder,
  fsync it, give it its final name without overwriting, fsync the folder, and only then
  unlink ``src``. A crash leaves at worst a stray ``.<name>.<hex>.hotfolder-part`` which
  ``finish_interrupted_move`` removes.

Everything raises ``OSError`` on failure and leaves ``src`` where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import filecmp
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from hotfolder.layout import MAX_SEGMENT_BYTES

TEMP_SUFFIX = ".hotfolder-part"
SIDECAR_SUFFIX = ".error.json"

# link() errors that mean "this filesystem (or this file) cannot be hard-linked", not "no".
_LINK_UNSUPPORTED = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EACCES}
)
# Folder fsync is refused by some filesystems; there is nothing further we could do there.
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
_MAX_CANDIDATES = 10_000
_COPY_CHUNK = 1 << 20
_RENAME_NOREPLACE = 1  # from <linux/fs.h>
_AT_FDCWD = -100


def fsync_dir(path: Path) -> None:
    """Make the folder's entries (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _shorten(text: str, max_bytes: int) -> str:
    """``text`` cut by whole characters (never inside one's UTF-8 bytes) to at most ``max_bytes``."""
    while text and len(os.fsencode(text)) > max_bytes:
        text = text[:-1]
    return text


def _fit(head: str, tail: str) -> str:
    """``head + tail``, ``head`` shortened so the name fits in NAME_MAX bytes.

    A file name of 255 bytes is legal, and so is the file; "name (2).ext" or "name.error.json"
    beside it would not be (ENAMETOOLONG), and a move that fails so is retried forever.
    """
    return _shorten(head, MAX_SEGMENT_BYTES - len(os.fsencode(tail))) + tail


def _candidate_names(name: str) -> Iterator[str]:
    """``name``, then ``stem (2).ext``, ``stem (3).ext``, ... (only the last suffix is kept apart)."""
    yield name
    dot = name.rfind(".")
    # A leading dot (".profile") is part of the stem, not a suffix.
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    if len(os.fsencode(ext)) > MAX_SEGMENT_BYTES // 2:
        stem, ext = name, ""  # "a.<250 bytes>": no room for a stem, so that is no extension
    for number in range(2, _MAX_CANDIDATES + 1):
        yield _fit(stem, f" ({number}){ext}")


def free_name(directory: Path, name: str) -> Path:
    """``directory/name`` if nothing is there, else the first free ``stem (N).ext``.

    A dangling symlink counts as taken: replacing it would still overwrite an entry.
    The answer is only a plan; ``move_file`` re-checks at the moment of the move.
    """
    for candidate in _candidate_names(name):
        path = directory / candidate
        if not os.path.lexists(path):
            return path
    raise FileExistsError(errno.EEXIST, "no free name left", str(directory / name))


def _regular_file_stat(src: Path) -> os.stat_result:
    """lstat ``src`` and refuse anything that is not a plain file (symlinks above all)."""
    info = os.lstat(src)
    if stat.S_ISLNK(info.st_mode):
        raise OSError(errno.ELOOP, "refusing to move a symbolic link", str(src))
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(src))
    return info


def _load_renameat2() -> Callable[..., int] | None:
    """libc's renameat2, if this platform has it (glibc >= 2.28)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        function = ctypes.CDLL(libc_name, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _rename_noreplace(src: Path, dest: Path) -> None:
    """rename that fails with EEXIST instead of replacing ``dest``.

    Uses RENAME_NOREPLACE where the kernel and filesystem support it; otherwise checks
    first and renames, which leaves the small race described at the top of this module.
    """
    if _renameat2 is not None:
        result = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dest), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(src), None, str(dest))
    if os.path.lexists(dest):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest))
    os.rename(src, dest)


def _place(src: Path, dest: Path, inode: int) -> tuple[Path, bool]:
    """Give ``src``'s inode the first free name from ``dest`` on; never replaces anything.

    Returns ``(final path, linked)``: when ``linked`` the caller still has to unlink
    ``src``; otherwise ``src`` was renamed away. EXDEV and other errors propagate.
    """
    use_link = True
    for candidate in _candidate_names(dest.name):
        target = dest.parent / candidate
        try:
            if use_link:
                os.link(src, target, follow_symlinks=False)
                if os.lstat(target).st_ino != inode:
                    # src was swapped for something else after we checked it: undo, refuse.
                    os.unlink(target)
                    raise OSError(errno.ESTALE, "source changed during the move", str(src))
                return target, True
            _rename_noreplace(src, target)
            return target, False
        except FileExistsError:
            continue
        except OSError as error:
            if use_link and error.errno in _LINK_UNSUPPORTED:
                use_link = False
                # Retry this very candidate with rename before moving on.
                try:
                    _rename_noreplace(src, target)
                    return target, False
                except FileExistsError:
                    continue
            raise
    raise FileExistsError(errno.EEXIST, "no free name left", str(dest))


_TEMP_TAIL_BYTES = len(f".{'0' * 8}{TEMP_SUFFIX}")  # what _temp_path puts after the head


def _temp_head(name: str) -> str:
    """``.<name>``, shortened so that ``.<8 hex><TEMP_SUFFIX>`` still fits after it.

    Two long names sharing their first ~230 bytes share this head, so a leftover sweep for one
    may remove the other's temp file while it is written; that move then fails and is retried.
    """
    return _shorten(f".{name}", MAX_SEGMENT_BYTES - _TEMP_TAIL_BYTES)


def _temp_path(directory: Path, name: str) -> Path:
    # A random part so that two workers planning the same name never share a temp file.
    return directory / f"{_temp_head(name)}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


class CopyDiffers(OSError):
    """The bytes copied across filesystems are not the bytes that were sent to the vendor."""


def _copy_to_temp(src: Path, dest: Path, expected: os.stat_result, sha256: str | None) -> Path:
    """Stream ``src`` into a hidden, fsynced temp file next to ``dest``; return its path.

    With ``sha256`` (what was uploaded), the copy is hashed as it is written and refused if it
    differs: the original on, say, a network mount is unlinked only after its copy is proven.
    """
    temp = _temp_path(dest.parent, dest.name)
    src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        opened = os.fstat(src_fd)
        if (opened.st_ino, opened.st_dev) != (expected.st_ino, expected.st_dev):
            raise OSError(errno.ESTALE, "source changed during the move", str(src))
        temp_fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(src_fd, "rb", closefd=False) as reader, open(temp_fd, "wb", closefd=False) as writer:
                digest = _copy_hashing(reader, writer, hashing=sha256 is not None)
            if digest is not None and digest != sha256:
                raise CopyDiffers(errno.EIO, "the copy's sha256 differs from the bytes sent: changed after upload",
                                  str(src))
            copied = os.fstat(temp_fd).st_size
            if copied != opened.st_size:
                raise OSError(errno.EIO, f"copied {copied} of {opened.st_size} bytes", str(src))
            os.fchmod(temp_fd, stat.S_IMODE(opened.st_mode))
            os.utime(temp_fd, ns=(opened.st_atime_ns, opened.st_mtime_ns))
            os.fsync(temp_fd)
        except BaseException:
            os.close(temp_fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(temp_fd)
        return temp
    finally:
        os.close(src_fd)


def _copy_hashing(reader: BinaryIO, writer: BinaryIO, *, hashing: bool) -> str | None:
    """Copy to the end; the sha256 of what was copied if ``hashing``."""
    hasher = hashlib.sha256() if hashing else None
    while chunk := reader.read(_COPY_CHUNK):
        writer.write(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return hasher.hexdigest() if hasher is not None else None


def _move_across(src: Path, dest: Path, expected: os.stat_result, sha256: str | None) -> Path:
    temp = _copy_to_temp(src, dest, expected, sha256)
    try:
        temp_inode = os.lstat(temp).st_ino
        final, linked = _place(temp, dest, temp_inode)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if linked:
        os.unlink(temp)
    fsync_dir(final.parent)
    # Only now, with the copy durable under its final name, may the original go.
    os.unlink(src)
    fsync_dir(src.parent)
    return final


def move_file(src: Path, dest: Path, *, sha256: str | None = None) -> Path:
    """Move ``src`` to ``dest`` (or the next free name there); return the path actually used.

    A move across filesystems copies; with ``sha256`` the copy must have that digest
    (:class:`CopyDiffers` otherwise, the source left in place).

    Creates missing parent folders. Refuses symlinks and non-regular files. On any
    ``OSError`` the source stays in place and no temp file is left behind.
    """
    expected = _regular_file_stat(src)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        # mkdir's own words, "File exists", would send a person looking for a clash of file names;
        # what blocks the move is a non-folder where the folder should be.
        raise NotADirectoryError(
            errno.ENOTDIR, f"{dest.parent} exists but is not a folder", str(dest.parent)
        ) from None
    try:
        final, linked = _place(src, dest, expected.st_ino)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        return _move_across(src, dest, expected, sha256)
    # Make the new name durable before the old one disappears: a crash then leaves two
    # names for one inode (repaired by finish_interrupted_move), never zero.
    fsync_dir(final.parent)
    if linked:
        os.unlink(src)
    fsync_dir(src.parent)
    return final


def _remove_leftover_temps(dest: Path) -> None:
    prefix = f"{_temp_head(dest.name)}."
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(dest.parent):
            if entry.name.startswith(prefix) and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _is_completed_copy(src: Path, dest: Path, expected_size: int) -> bool:
    """Both names exist: is ``dest`` really our file, so that ``src`` may go?

    The same inode means the link happened. A different inode of the right size is
    compared byte for byte, because a stranger's file of equal size under the planned
    name must never cost us the original.
    """
    try:
        if os.path.samefile(src, dest):
            return True
        found = os.lstat(dest)
        if not stat.S_ISREG(found.st_mode) or found.st_size != expected_size:
            return False
        return filecmp.cmp(src, dest, shallow=False)
    except FileNotFoundError:
        return False


def finish_interrupted_move(src: Path, dest: Path, expected_size: int) -> bool:
    """After a crash, settle a planned ``src -> dest`` move; True if it is complete now.

    * only ``dest`` exists: complete.
    * both exist and ``dest`` is the same file (same inode, or equal size and bytes):
      the unlink was lost, so ``src`` is unlinked now; complete.
    * both exist but ``dest`` is some other file, only ``src`` exists, or neither: False;
      the caller moves again (``move_file`` will pick a free name) or gives up.

    Leftover ``.<dest name>.*.hotfolder-part`` temp files are removed in every case.
    """
    _remove_leftover_temps(dest)
    src_there = os.path.lexists(src)
    dest_there = os.path.lexists(dest)
    if dest_there and not src_there:
        return True
    if dest_there and src_there and _is_completed_copy(src, dest, expected_size):
        os.unlink(src)
        fsync_dir(src.parent)
        return True
    return False


def _is_own_sidecar(path: Path, job_id: object) -> bool:
    if job_id is None:
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            existing = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(existing, dict) and existing.get("job_id") == job_id


def write_sidecar(file_in_failed: Path, info: Mapping[str, object], suffix: str = SIDECAR_SUFFIX) -> Path:
    """Write ``<name><suffix>`` (``.error.json`` by default) next to the file, atomically; return its path.

    An existing sidecar is replaced only when it carries the same ``job_id`` (a retry of
    ours); any other is left alone and a free name is used instead.
    """
    directory = file_in_failed.parent
    wanted = directory / _fit(file_in_failed.name, suffix)  # a 255-byte name leaves no room for suffix
    text = json.dumps(dict(info), indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    temp = _temp_path(directory, wanted.name)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with open(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.lexists(wanted) and _is_own_sidecar(wanted, info.get("job_id")):
            os.replace(temp, wanted)
            final = wanted
        else:
            final, linked = _place(temp, wanted, os.lstat(temp).st_ino)
            if linked:
                os.unlink(temp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(directory)
    return final


def move_back_to_inbox(failed_file: Path, inbox_path: Path) -> Path:
    """Retry: move a file from failed/ to ``inbox_path`` (or the next free name beside it) and remove the
    sidecar that said why it failed; return where it went. The watcher then sees it as a new file."""
    final = move_file(failed_file, free_name(inbox_path.parent, inbox_path.name))
    sidecar = failed_file.with_name(failed_file.name + SIDECAR_SUFFIX)
    if sidecar.exists():
        sidecar.unlink()
    return final


def failed_files(folder: Path) -> list[Path]:
    """The files under ``folder`` (failed/ or a part of it) that a retry would move back, sorted; not
    the sidecars, and no symlink (nothing planted there may pull a file from elsewhere into the inbox)."""
    return [path for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.is_symlink() and not path.name.endswith(SIDECAR_SUFFIX)]
