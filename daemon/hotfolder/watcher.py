"""Find finished files in the inbox: events or a poller nominate, ``os.lstat`` decides, a settle timer releases.

Theory of operation
-------------------
Three sources *nominate* paths, and nothing else: the watcher proper (watchdog's inotify observer,
or on network mounts, where inotify never hears about writes made by other machines, our own
:class:`FolderPoller`), a full rescan (at start, every ``rescan_interval`` and after an inotify queue
overflow), and :meth:`Watcher.forget`.
Nominations are cheap: they go into one locked dict and wake the settle thread.

The settle thread alone owns the tracking state, so it needs no lock of its own. For each nominated
path it takes ``os.lstat`` (never ``stat``, never ``open``): a regular non-empty file becomes a
*candidate* with its ``(size, mtime_ns)`` and the clock time they were first seen; when the same
values are still there ``settle`` seconds later the file is *ready* and ``on_ready`` is called once
for that ``(path, size, mtime_ns)``. A candidate is sampled again when it is due (a heap ordered by
due time) or when an event nominates it, so a 100,000-file rescan costs about two ``lstat`` per file
rather than one per file per tick.

Why the pieces are the way they are:

* Events are hints. inotify merges, drops (queue overflow) and misses (NFS/SMB writes from other
  hosts) events, and the poller only sees what folder timestamps tell it, so the file system is
  asked every time and the rescans are the safety net.
* watchdog 7.1 does **not** deliver inotify's ``IN_Q_OVERFLOW`` to handlers: ``InotifyFD`` logs the
  warning "Inotify queue overflowed; filesystem events were lost" on ``watchdog.observers.inotify_c``
  (and the watch group logs "reconciling recursive watches" on ``watchdog.observers.inotify``) and
  rebuilds its watches. We listen for those log records and answer with a full rescan. If the
  application raises those loggers above WARNING, the overflow goes unnoticed until the periodic
  rescan.
* watchdog also silently skips sub-folders it cannot watch (``_add_callback`` swallows ``OSError``
  for anything but the root), so hitting ``fs.inotify.max_user_watches`` with many record folders is
  invisible; after the first rescan we compare the folder count with the limit and warn.
* Zero-byte files are not candidates: a scanner may create first and fill later, and the fill
  produces an event (or a rescan hit) that nominates the file again. The poller cannot see a fill
  (the folder does not change), so when polling an empty file is looked at again every
  ``poll_interval`` until it has content; it does not count as pending.
* ``FileClosedEvent`` (``IN_CLOSE_WRITE``) is only a nomination, never a shortcut past settle: SMB
  clients and scanner drivers open and close a file several times while writing it.
* Forgotten entries: "already reported" memory is pruned at each full rescan for paths the walk
  did not see and ``lstat`` confirms gone, so it stays proportional to the files in the inbox.

Polling
-------
watchdog's ``PollingObserverVFS`` took a full snapshot of the tree every poll (an ``lstat`` and a
Python object per entry) and diffed it with the previous one: 107 ms of CPU every 2 s for 10,000
files, 6 % of a core while idle, growing with every file. :class:`FolderPoller` instead ``lstat``s
each known folder every ``poll_interval`` (100 folders: 0.3 ms) and compares its
``(st_mtime_ns, st_ctime_ns, st_ino)`` with what it had when it last listed it; only a folder whose
values moved is listed again (``scandir``, names and ``d_ino`` only, no ``lstat`` per file). Names
that are new, or whose inode changed (another file renamed over one), or that are gone, are
nominated like inotify events; new sub-folders are added and listed at once; vanished ones are
forgotten with everything below them. Like the rescan it never follows symlinks and never enters
ignored folders.

What the poller sees, and why:

* A file created, linked or renamed into a folder (``mv`` from elsewhere, ``x.tmp`` → ``x.pdf``)
  or deleted from it: each changes the folder's mtime and ctime.
* A record folder created, or moved in with its files, and filled before the next poll: the parent
  changed, and the new folder is listed, files and sub-folders, when it is first met.
* A folder renamed over another (``rename(2)`` replaces an empty folder): a new inode, both in its
  parent's ``d_ino`` and in its own key, so everything known below the old one is dropped and the
  new one listed from scratch.
* A folder whose mtime a tool sets back after adding files (``rsync -t``, ``touch -d``): the ctime
  cannot be set back, which is why it is in the key.
* Coarse timestamps ("racy git"): a folder changed in the same timestamp tick as our listing, but
  after it, keeps the same mtime and ctime. Ticks are 2 s on FAT/exFAT and some SMB servers, 1 s on
  older NFS servers and ext3, a jiffy (1–10 ms) on ext4. So a folder whose timestamps are within
  :data:`RACY_WINDOW_NS` (2 s of granularity plus 1 s of clock skew to the file server) of the
  moment its ``lstat`` was taken is listed again at every poll until they are safely older. The key
  is taken *before* the listing, so a change between the two only causes one listing too many.

What it does not see, and what covers it:

* Writes to a file that stays in place (append, truncate and rewrite, an ``O_TRUNC`` save): the
  folder does not change. A candidate that has not settled is sampled by the settle heap anyway, so
  a file still growing is seen and settle restarts; an empty file is re-sampled as said above. A
  file already reported belongs to the runner, which checks its size and mtime before and after
  reading it; the next periodic rescan nominates the new content. A file deleted and created again
  between two polls that gets the same inode number back (ext4 reuses them) is the same case.
* NFS caches a folder's attributes for ``acdirmin``..``acdirmax`` (30–60 s by default), so
  ``lstat`` keeps returning the old mtime for up to a minute: a pickup is delayed, not lost (mount
  with a smaller ``acdirmax``/``actimeo`` to shorten it; SMB's ``actimeo`` defaults to 1 s).
* The racy rule compares the server's timestamps with our clock; a file server whose clock is
  behind ours by more than a second, with a coarse timestamp tick, can slip a change past it.
* For all of these the periodic full rescan is the net: it nominates every file with its ``lstat``,
  and it makes the poller list every known folder again at its next poll, which repairs the
  poller's own picture (a sub-folder or name it missed).

The periodic rescan and the poll interval use wall time (``threading.Event.wait``); the settle
measurement uses the injectable ``clock``, and the racy rule the poller's injectable ``wall_ns``
(file timestamps are wall time).
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import heapq
import logging
import os
import re
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from hotfolder.gate import ReadinessGate, Wait
from hotfolder.mountcache import AttributeCache, attribute_cache

log = structlog.get_logger("hotfolder.watcher")

BATCH_SIZE = 1000  # settled files handed over per call: one journal transaction each
DUE_COALESCE = 0.05  # seconds: candidates coming due this close together are released in one pass

# Mounts where the kernel does not see writes made by other machines, so inotify stays silent.
NETWORK_FS_TYPES: frozenset[str] = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "smb", "ncpfs", "ncp", "afs", "coda", "9p",
    "ceph", "fuse.ceph-fuse", "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "beegfs", "gfs2", "ocfs2",
    "davfs", "fuse.davfs2", "fuse.sshfs", "sshfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.juicefs", "fuse.mfs", "fuse.lizardfs",
    # Host-to-guest shared folders: changes made on the host do not raise inotify events in the guest.
    "vboxsf", "virtiofs", "fuse.vmhgfs-fuse", "prl_fs",
})

DEFAULT_IGNORE: tuple[str, ...] = (
    ".*", "*.tmp", "*.part", "*.crdownload", "~$*", "Thumbs.db", "desktop.ini", ".DS_Store", "._*", "@eaDir/",
)

METHODS = ("auto", "native", "polling")

# Only these reach the handler; IN_OPEN/IN_CLOSE_NOWRITE would fire every time the daemon reads a file.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileAttribEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]

_REFUSAL_BY_KIND: dict[int, str] = {
    statmod.S_IFLNK: "symlink: not followed",
    statmod.S_IFIFO: "FIFO: not a regular file",
    statmod.S_IFSOCK: "socket: not a regular file",
    statmod.S_IFCHR: "character device: not a regular file",
    statmod.S_IFBLK: "block device: not a regular file",
}

_WATCH_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM})

_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")


# --- mounts -----------------------------------------------------------------------------------------


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


# --- ignore rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _IgnoreRules:
    """Patterns compiled into two regexes: one for any name, one for folder names only."""

    any_name: re.Pattern[str] | None
    folder_only: re.Pattern[str] | None

    def file_ignored(self, name: str) -> bool:
        return self.any_name is not None and self.any_name.match(name) is not None

    def folder_ignored(self, name: str) -> bool:
        if self.file_ignored(name):
            return True
        return self.folder_only is not None and self.folder_only.match(name) is not None

    def path_ignored(self, parts: Sequence[str], *, last_is_folder: bool = False) -> bool:
        *folders, last = parts
        if any(self.folder_ignored(name) for name in folders):
            return True
        return self.folder_ignored(last) if last_is_folder else self.file_ignored(last)


def _combine(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    # Case-insensitive: Windows clients write "THUMBS.DB", "Desktop.ini" and "X.TMP" as they please.
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def _compile_rules(patterns: tuple[str, ...]) -> _IgnoreRules:
    folder_only = [p.rstrip("/") for p in patterns if p.endswith("/") and p.rstrip("/")]
    any_name = [p for p in patterns if p and not p.endswith("/")]
    return _IgnoreRules(_combine(any_name), _combine(folder_only))


def is_ignored(relpath: PurePosixPath, patterns: Sequence[str], *, is_folder: bool = False) -> bool:
    """Whether any component of ``relpath`` (relative to the inbox) matches an ignore pattern.

    Patterns are fnmatch globs on single names, compared case-insensitively; a pattern ending in
    "/" matches folder names only. Every component but the last is a folder; the last is a file
    unless ``is_folder``.
    """
    if not relpath.parts:
        return False
    return _compile_rules(tuple(patterns)).path_ignored(relpath.parts, last_is_folder=is_folder)


# --- settle tracking --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    size: int
    mtime_ns: int
    due: float  # clock time at which these values will have been stable for `settle` seconds


_Sighting = os.stat_result | None  # a stat the rescan already has, or None: "lstat it yourself"
# What the settle thread hands over: a ready file's stat, a refusal of a non-regular file (str), or
# a file that stayed incomplete too long (its stat and the reason).
_Callback = tuple[str, os.stat_result | str | tuple[os.stat_result, str]]


def _refusal(mode: int) -> str:
    return _REFUSAL_BY_KIND.get(statmod.S_IFMT(mode), "not a regular file")


def _inotify_watch_limit() -> int | None:
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None


class _OverflowSpotter(logging.Handler):
    """watchdog reports inotify queue overflows only as log records; turn them into a rescan."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self._on_overflow()
        except Exception:
            self.handleError(record)


class _Nominator(FileSystemEventHandler):
    """Turns watchdog events into nominations; runs on the observer thread, so it never raises."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._watcher._on_event(event)
        except Exception:
            log.exception("watch event handling failed", event=repr(event))


# --- polling ----------------------------------------------------------------------------------------

# A folder whose mtime or ctime is this close to the moment we took its lstat may change again
# without either moving (see "Coarse timestamps" above): 2 s, the coarsest tick in use (FAT, some SMB
# servers), plus 1 s for a file server's clock running behind ours.
RACY_WINDOW_NS = 3_000_000_000

_FolderKey = tuple[int, int, int]  # (st_mtime_ns, st_ctime_ns, st_ino)


def _folder_key(st: os.stat_result) -> _FolderKey:
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _entries(listing: Iterable[os.DirEntry[str]], rules: _IgnoreRules) -> Iterator[tuple[os.DirEntry[str], bool]]:
    """The entries the rules let through, each with whether it is a folder (a symlink to one is not)."""
    for entry in listing:
        try:
            # d_type answers is_dir without a syscall; a symlinked folder is not a dir here.
            is_folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue  # gone between readdir and the stat that a file system without d_type needs
        if not (rules.folder_ignored(entry.name) if is_folder else rules.file_ignored(entry.name)):
            yield entry, is_folder


@dataclass(slots=True)
class _Folder:
    """What the poller knows of one folder since it last listed it."""

    key: _FolderKey | None = None  # taken just before that listing; None: never listed
    files: dict[str, int] = field(default_factory=dict)  # non-folder name → d_ino (free from readdir)
    folders: dict[str, int] = field(default_factory=dict)  # sub-folder name → d_ino
    racy: bool = False  # timestamps too close to the listing to be trusted: list again at the next poll


class FolderPoller:
    """Nominates what changed in the inbox by comparing folders' timestamps; see "Polling" above.

    :meth:`prime` learns the tree without nominating (the start rescan nominates what is there);
    :meth:`run` then calls :meth:`poll` every ``interval`` until ``stop`` is set. Only the thread
    that runs it touches the folder map, so it needs no lock.
    """

    def __init__(
        self,
        root: str,
        *,
        ignore: Sequence[str],
        nominate: Callable[[dict[str, _Sighting]], None],
        stop: threading.Event | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        listing_lag: float = 0.0,
    ) -> None:
        self.root = root
        # A network mount may answer a folder's lstat and listing from a cache this many seconds
        # old: a folder changed that recently may have been listed from before the change.
        self._racy_window_ns = RACY_WINDOW_NS + int(listing_lag * 1e9)
        self._rules = _compile_rules(tuple(ignore))
        self._nominate = nominate
        self._stop = stop if stop is not None else threading.Event()
        self._wall_ns = wall_ns
        self._folders: dict[str, _Folder] = {}
        self._relist_all = threading.Event()

    def prime(self) -> None:
        """Learn the tree as it is now, nominating nothing: the start rescan nominates what is there."""
        self._folders = {self.root: _Folder()}
        self._scan(nominate=False)

    def relist_all(self) -> None:
        """At the next poll, list every known folder whatever its timestamps say (after a rescan)."""
        self._relist_all.set()

    def folder_count(self) -> int:
        return len(self._folders)

    def run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.poll()
            except Exception:
                log.exception("poll failed", inbox=self.root)

    def poll(self) -> None:
        relist_all = self._relist_all.is_set()
        self._relist_all.clear()
        if relist_all:
            for folder in self._folders.values():
                folder.racy = True
        self._scan(nominate=True)

    def _scan(self, *, nominate: bool) -> None:
        # A list, not the dict: listing adds sub-folders (listed there and then) and forgets others.
        for path in list(self._folders):
            if self._stop.is_set():
                return
            folder = self._folders.get(path)
            if folder is None:
                continue  # forgotten with a folder above it, earlier in this pass
            taken = self._wall_ns()
            st = self._lstat_folder(path)
            if st is not None and (folder.racy or _folder_key(st) != folder.key):
                self._list_below(path, folder, st, taken, nominate=nominate)

    def _lstat_folder(self, path: str) -> os.stat_result | None:
        """The folder's lstat, or None after forgetting it (gone, or no longer a folder)."""
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            log.warning("cannot lstat folder; will look again", folder=path, error=str(exc))
            return None
        if st is not None and statmod.S_ISDIR(st.st_mode):
            return st
        # A symlink or file put in its place is an entry of the parent, which changed too.
        self._forget(path)
        return None

    def _list_below(self, path: str, folder: _Folder, st: os.stat_result, taken: int, *, nominate: bool) -> None:
        # A stack, not recursion: a hostile share may nest folders deeper than Python's call stack.
        stack = [(path, folder, st, taken)]
        while stack and not self._stop.is_set():
            for sub in self._list(*stack.pop(), nominate=nominate):
                taken = self._wall_ns()
                sub_st = self._lstat_folder(sub)
                if sub_st is not None:
                    sub_folder = self._folders[sub] = _Folder()
                    stack.append((sub, sub_folder, sub_st, taken))

    def _list(self, path: str, folder: _Folder, st: os.stat_result, taken: int, *, nominate: bool) -> list[str]:
        """List one folder, nominate what changed in it, and return the sub-folders to add."""
        files: dict[str, int] = {}
        folders: dict[str, int] = {}
        try:
            with os.scandir(path) as listing:
                for entry, is_folder in _entries(listing, self._rules):
                    (folders if is_folder else files)[entry.name] = entry.inode()  # d_ino: no syscall
        except (FileNotFoundError, NotADirectoryError):
            self._forget(path)
            return []
        except OSError as exc:
            # Keep the old names; the new key means no retry (and no warning) until the folder changes.
            log.warning("cannot list folder", folder=path, error=str(exc))
            folder.key, folder.racy = _folder_key(st), False
            return []

        # New, another file renamed over it (new inode), or gone: the settle thread's lstat decides.
        changed: dict[str, _Sighting] = {
            os.path.join(path, name): None
            for name, inode in files.items() if folder.files.get(name) != inode
        }
        changed.update((os.path.join(path, name), None) for name in folder.files.keys() - files.keys())
        added: list[str] = []
        for name, inode in folders.items():
            sub = os.path.join(path, name)
            if folder.folders.get(name) != inode:
                self._forget(sub)  # if another folder was renamed over it, nothing known there holds
                added.append(sub)
            elif sub not in self._folders:
                added.append(sub)  # its lstat failed when it was first met
        for name in folder.folders.keys() - folders.keys():
            self._forget(os.path.join(path, name))

        folder.key, folder.files, folder.folders = _folder_key(st), files, folders
        folder.racy = max(st.st_mtime_ns, st.st_ctime_ns) > taken - self._racy_window_ns
        if nominate and changed:
            self._nominate(changed)
        return added

    def _forget(self, path: str) -> None:
        """Drop a folder and everything below it; nominate its files so the settle thread drops them too."""
        known = self._folders.get(path)
        gone: dict[str, _Sighting] = {}
        stack = [path]
        while stack:
            top = stack.pop()
            folder = self._folders.pop(top, None)
            if folder is not None:
                gone.update((os.path.join(top, name), None) for name in folder.files)
                stack.extend(os.path.join(top, name) for name in folder.folders)
        if path == self.root:
            if known is not None and known.key is not None:
                log.error("the inbox folder itself was removed; polling until it is back", inbox=path)
            self._folders[path] = _Folder()  # listed in full when it is back
        if gone:
            self._nominate(gone)


class Watcher:
    """Watch ``inbox`` and call ``on_ready(path, stat)`` once per settled ``(path, size, mtime_ns)``."""

    def __init__(
        self,
        inbox: Path,
        *,
        method: str = "auto",
        settle: float = 5.0,
        poll_interval: float = 2.0,
        rescan_interval: float = 300.0,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        on_ready: Callable[[Path, os.stat_result], None],
        on_refused: Callable[[Path, str], None] | None = None,
        on_ready_batch: Callable[[list[tuple[Path, os.stat_result]]], None] | None = None,
        gate: ReadinessGate | None = None,
        on_incomplete: Callable[[Path, os.stat_result, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache: AttributeCache | None = None,
    ) -> None:
        self.inbox = Path(os.path.abspath(inbox))
        self._method = method
        self.mode: str = choose_method(method, self.inbox)
        self._settle = max(0.0, settle)
        # The inbox mount's attribute cache (None on a local file system): see daemon/hotfolder/mountcache.py.
        # Where no open can bypass it, figures must hold for settle plus the cache to have been
        # fetched afresh at least settle apart; where an open does, the last look is taken so.
        self._cache = cache
        self._quiet_for = self._settle + (cache.settle_lag if cache is not None else 0.0)
        self._look_through_open = cache is not None and cache.revalidated_on_open
        self._tick = max(0.01, min(self._settle / 4, 0.25))
        self._poll_interval = poll_interval
        self._rescan_interval = rescan_interval
        self._ignore = tuple(ignore)
        self._rules = _compile_rules(self._ignore)
        self._on_ready = on_ready
        # Optional: files that settle together (a rescan at start finds thousands) are handed over
        # in one call, so the daemon can journal them in one transaction instead of one each.
        self._on_ready_batch = on_ready_batch
        self._on_refused = on_refused
        # Settled files pass the gate's "is it finished?" tests before they are handed over.
        self._gate = gate
        self._on_incomplete = on_incomplete
        # A file that is not ready is looked at again this often (a writer's close event, with
        # inotify, brings the look forward).
        self._recheck = max(0.5, min(self._settle, 5.0))
        self._clock = clock

        self._root = os.fspath(self.inbox)
        self._prefix = self._root.rstrip(os.sep) + os.sep

        # Shared between nominating threads and the settle thread, guarded by _cond.
        self._cond = threading.Condition()
        # Nominated paths with the clock time of the nomination: a stat the walk took counts from
        # then, not from when the settle thread gets to it (at start, after a walk of 100,000 files).
        self._incoming: dict[str, tuple[_Sighting, float]] = {}
        self._forgotten: set[str] = set()
        self._reconcile: list[set[str]] = []
        self._in_flight = 0

        # Owned by the settle thread only.
        self._candidates: dict[str, _Candidate] = {}
        self._due: list[tuple[float, str]] = []
        self._reported: dict[str, tuple[int, int]] = {}
        self._refused: set[str] = set()
        self._empty: dict[str, float] = {}  # polling only: empty files, and when to look at them again

        self._stop = threading.Event()
        self._rescan_wanted = threading.Event()
        self._rescan_lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._poller: FolderPoller | None = None
        self._spotter: _OverflowSpotter | None = None
        self._threads: list[threading.Thread] = []
        self._started = False

    # --- public surface ---

    def start(self) -> None:
        """Start the observer or poller, the settle and rescan threads, then scan what is already there."""
        if self._started:
            raise RuntimeError("a Watcher starts once")
        if not os.path.isdir(self._root):
            raise NotADirectoryError(f"inbox {self._root} is not a folder")
        self._started = True
        self._start_watching()
        if self._gate is not None:
            self._gate.start(self.inbox, self.mode)
        if self._cache is not None:
            self._say_how_the_cache_is_handled()
        loops: list[tuple[str, Callable[[], None]]] = [
            ("hotfolder-settle", self._settle_loop), ("hotfolder-rescan", self._rescan_loop),
        ]
        if self._poller is not None:
            loops.append(("hotfolder-poll", functools.partial(self._poller.run, self._poll_interval)))
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        folders = self._full_rescan(reason="start")
        self._warn_if_watch_limit_near(folders)

    def stop(self) -> None:
        """Stop and join every thread; safe to call twice or before start."""
        self._stop.set()
        self._rescan_wanted.set()
        with self._cond:
            self._cond.notify_all()
        if self._spotter is not None:
            logging.getLogger("watchdog.observers").removeHandler(self._spotter)
            self._spotter = None
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._threads.clear()

    def rescan(self) -> None:
        """Walk the whole inbox (no symlinks followed) and nominate every entry."""
        self._full_rescan(reason="requested")

    def forget(self, path: Path) -> None:
        """The daemon took the file away: drop what is known about it (a new file there is new)."""
        with self._cond:
            self._forgotten.add(os.path.abspath(path))
            self._cond.notify()

    def pending_count(self) -> int:
        """Files nominated or waiting to settle; 0 means the watcher has nothing in hand."""
        with self._cond:
            return len(self._incoming) + len(self._forgotten) + self._in_flight + len(self._candidates)

    # --- observer or poller ---

    def _start_watching(self) -> None:
        if self.mode == "native":
            try:
                self._observer = self._make_observer()
                self._listen_for_overflow()
                return
            except OSError as exc:
                # ENOSPC (max_user_watches), EMFILE (max_user_instances), ENOMEM: polling still works.
                if self._method != "auto" or exc.errno not in _WATCH_LIMIT_ERRNOS:
                    raise
                log.warning("native watching failed; polling instead", inbox=self._root, error=str(exc))
                self.mode = "polling"
        self._poller = FolderPoller(
                self._root, ignore=self._ignore, nominate=self._submit, stop=self._stop,
                listing_lag=self._cache.seconds if self._cache is not None else 0.0,
            )
        # Learned before the start rescan lists the tree: whatever arrives after the poller listed a
        # folder either changes that folder or is met by the rescan.
        self._poller.prime()

    def _make_observer(self) -> BaseObserver:
        observer = Observer()
        observer.schedule(_Nominator(self), self._root, recursive=True, event_filter=_EVENT_FILTER)
        try:
            observer.start()
        except BaseException:
            self._discard_observer(observer)
            raise
        return observer

    @staticmethod
    def _discard_observer(observer: BaseObserver) -> None:
        try:
            observer.stop()
            if observer.is_alive():
                observer.join()
        except Exception:
            log.debug("cleanup of a failed observer raised", exc_info=True)

    def _listen_for_overflow(self) -> None:
        self._spotter = _OverflowSpotter(self._overflowed)
        logging.getLogger("watchdog.observers").addHandler(self._spotter)

    def _overflowed(self) -> None:
        log.warning("inotify queue overflowed; rescanning the inbox", inbox=self._root)
        self._rescan_wanted.set()

    def _say_how_the_cache_is_handled(self) -> None:
        cache = self._cache
        if cache is None or cache.seconds <= 0:
            return
        if cache.revalidated_on_open:
            if cache.seconds > self._settle:
                log.warning(
                    "the network mount's attribute cache is longer than watch.settle: polling sees new files "
                    "late; a settled file is looked at through an open, which the server answers afresh",
                    inbox=self._root, cache_seconds=cache.seconds, cache_option=cache.source,
                    settle=self._settle, remedy=cache.remedy,
                )
            return
        log.warning(
            "the network mount answers from an attribute cache that opening a file does not refresh: a file is "
            "picked up once quiet for watch.settle plus the cache, and leaves the mount only after the cache "
            "has expired since its upload",
            inbox=self._root, cache_seconds=cache.seconds, cache_option=cache.source, settle=self._settle,
            quiet_for=self._quiet_for, remedy=cache.remedy,
        )

    def _warn_if_watch_limit_near(self, folders: int) -> None:
        limit = _inotify_watch_limit() if self.mode == "native" else None
        if limit is not None and folders + 1 >= limit * 0.9:
            log.warning(
                "inbox has nearly as many folders as inotify may watch; new files in unwatched folders "
                "are found only by the periodic rescan (raise fs.inotify.max_user_watches or use polling)",
                folders=folders, max_user_watches=limit,
            )

    # --- nominations ---

    def _on_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if isinstance(event, DirCreatedEvent):
            self._scan_folder(src)
        elif isinstance(event, DirMovedEvent):
            # The old paths fall out on their next lstat; the folder's content is new to us.
            self._scan_folder(dest)
        elif isinstance(event, DirDeletedEvent):
            if src == self._root:
                log.error("the inbox folder itself was removed; only rescans can find it again", inbox=src)
        elif isinstance(event, FileMovedEvent):
            self._nominate_path(src)
            self._nominate_path(dest)
        else:
            self._nominate_path(src)

    def _relative_parts(self, path: str) -> list[str] | None:
        if not path.startswith(self._prefix):
            return None
        return path[len(self._prefix):].split(os.sep)

    def _nominate_path(self, path: str) -> None:
        parts = self._relative_parts(path)
        if parts and not self._rules.path_ignored(parts):
            self._submit({path: None})

    def _scan_folder(self, path: str) -> None:
        parts = self._relative_parts(path)
        if parts and not self._rules.path_ignored(parts, last_is_folder=True):
            self._walk(path, seen=None)

    def _submit(self, sightings: dict[str, _Sighting]) -> None:
        stamp = self._clock()
        with self._cond:
            for path, seen in sightings.items():
                # A fresh lstat (None) beats a stat the walk took earlier.
                if seen is None or path not in self._incoming:
                    self._incoming[path] = (seen, stamp)
            self._cond.notify()

    # --- rescans ---

    def _full_rescan(self, *, reason: str) -> int:
        if self._poller is not None and reason != "start":
            self._poller.relist_all()  # whatever the poller's picture missed, it learns again
        with self._rescan_lock:
            started = time.monotonic()
            seen: set[str] = set()
            folders = self._walk(self._root, seen=seen)
            if self._stop.is_set():
                return folders
            with self._cond:
                self._reconcile.append(seen)
                self._cond.notify()
            log.debug(
                "rescanned inbox", reason=reason, entries=len(seen), folders=folders,
                seconds=round(time.monotonic() - started, 3),
            )
            return folders

    def _walk(self, top: str, *, seen: set[str] | None) -> int:
        """Nominate every non-ignored entry below ``top``, one batch per folder; return folders seen."""
        stack, folders = [top], 0
        while stack and not self._stop.is_set():
            batch, subfolders = self._scan_one(stack.pop())
            stack.extend(subfolders)
            folders += len(subfolders)
            if seen is not None:
                seen.update(batch)
            if batch:
                self._submit(batch)
        return folders

    def _scan_one(self, folder: str) -> tuple[dict[str, _Sighting], list[str]]:
        batch: dict[str, _Sighting] = {}
        subfolders: list[str] = []
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return batch, subfolders
        except OSError as exc:
            log.warning("cannot list folder", folder=folder, error=str(exc))
            return batch, subfolders
        with entries:
            for entry, is_folder in _entries(entries, self._rules):
                if is_folder:
                    subfolders.append(entry.path)
                    continue
                try:
                    batch[entry.path] = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone between readdir and lstat
        return batch, subfolders

    def _rescan_loop(self) -> None:
        while not self._stop.is_set():
            self._rescan_wanted.wait(self._rescan_interval)
            if self._stop.is_set():
                return
            reason = "overflow" if self._rescan_wanted.is_set() else "periodic"
            self._rescan_wanted.clear()
            try:
                self._full_rescan(reason=reason)
            except Exception:
                log.exception("rescan failed", inbox=self._root)

    # --- the settle thread ---

    def _settle_loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stop.is_set() or self._incoming or self._forgotten or self._reconcile
                           or self._due):
                    self._cond.wait()  # nothing pending: sleep without polling
                if self._stop.is_set():
                    return
                incoming, self._incoming = self._incoming, {}
                forgotten, self._forgotten = self._forgotten, set()
                reconcile, self._reconcile = self._reconcile, []
                self._in_flight = len(incoming) + len(forgotten)
            try:
                self._process(incoming, forgotten, reconcile)
            except Exception:
                log.exception("settle pass failed")
            finally:
                with self._cond:
                    self._in_flight = 0
            # Fixed tick, not woken by new nominations: a file being written can raise an event per
            # write(), and batching them keeps that to one lstat per tick. But when a candidate comes
            # due before the tick ends, wake for it (plus a little, so that files coming due together
            # share one pass and one journal transaction): its settle time is not rounded up to a tick.
            if self._stop.wait(self._next_wait()):
                return

    def _next_wait(self) -> float:
        if not self._due:
            return self._tick
        until_due = max(0.0, self._due[0][0] - self._clock())
        return min(self._tick, until_due + DUE_COALESCE)

    def _process(
        self, incoming: dict[str, tuple[_Sighting, float]], forgotten: set[str], reconcile: list[set[str]]
    ) -> None:
        now = self._clock()
        out: list[_Callback] = []
        # What has come due first, handed over at once: a start scan's pass over 100,000 new
        # nominations takes seconds.
        self._release_due(now, out)
        if out:
            self._deliver(out)
            out = []
        for path in forgotten:
            self._drop(path)
            incoming[path] = (None, now)  # something new may already sit at that path
        for number, (path, (sighting, stamp)) in enumerate(incoming.items(), 1):
            # A stat taken at nomination holds for that moment; an lstat taken here holds for now.
            self._observe(path, sighting, now if sighting is None else min(stamp, now), out)
            if number % BATCH_SIZE == 0:
                # A pass over a start scan's 100,000 nominations takes seconds: hand over what has
                # settled meanwhile instead of keeping it until the pass ends.
                now = self._clock()
                self._release_due(now, out)
                self._deliver(out)
                out = []
        for seen in reconcile:
            self._reconcile_with(seen, now, out)
        self._release_due(self._clock(), out)
        self._deliver(out)
        if self._gate is not None:
            self._gate.flush()

    def _release_due(self, now: float, out: list[_Callback]) -> None:
        """Sample again every candidate whose settle time has come, handing them over by the batch
        (a start scan brings thousands due at once, and each takes an lstat: the first ones should
        not wait for the last)."""
        while self._due and self._due[0][0] <= now:
            due, path = heapq.heappop(self._due)
            candidate = self._candidates.get(path)
            # Else a stale heap entry: the file was sampled again or dropped since.
            if (candidate is not None and candidate.due == due) or self._empty.get(path) == due:
                self._observe(path, None, now, out)
                if len(out) >= BATCH_SIZE:
                    self._deliver(out)
                    out.clear()

    def _reconcile_with(self, seen: set[str], now: float, out: list[_Callback]) -> None:
        # Whatever we remember that the walk did not meet is either gone or arrived after its folder
        # was listed; lstat tells which, so "already reported" memory shrinks with the inbox.
        unseen = [p for p in (*self._reported, *self._refused, *self._candidates) if p not in seen]
        for path in unseen:
            self._observe(path, None, now, out)

    def _observe(self, path: str, sighting: _Sighting, now: float, out: list[_Callback]) -> None:
        st = sighting
        if st is None:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                self._drop(path)
                return
            except OSError as exc:
                log.warning("cannot lstat file; will look again", file=path, error=str(exc))
                if path in self._candidates:
                    self._schedule(path, self._candidates[path], now)
                elif path in self._empty:
                    self._recheck_empty(path, now)
                return
        if statmod.S_ISREG(st.st_mode):
            self._refused.discard(path)
            self._track(path, st, now, out)
        elif statmod.S_ISDIR(st.st_mode):
            self._drop(path)
        else:
            self._candidates.pop(path, None)
            self._reported.pop(path, None)
            self._empty.pop(path, None)
            if path not in self._refused:
                self._refused.add(path)
                out.append((path, _refusal(st.st_mode)))

    def _track(self, path: str, st: os.stat_result, now: float, out: list[_Callback]) -> None:
        values = (st.st_size, st.st_mtime_ns)
        if st.st_size == 0:
            self._drop(path)  # the write that fills it will nominate it again, with inotify
            if self.mode == "polling":
                self._recheck_empty(path, now)  # the poller cannot see the fill
            return
        self._empty.pop(path, None)
        if self._reported.get(path) == values:
            self._candidates.pop(path, None)
            return
        candidate = self._candidates.get(path)
        if candidate is None or (candidate.size, candidate.mtime_ns) != values:
            candidate = _Candidate(st.st_size, st.st_mtime_ns, 0.0)
            self._candidates[path] = candidate
            self._schedule(path, candidate, now)
        elif now >= candidate.due:
            if self._look_through_open and not self._same_through_open(path, values):
                self._candidates.pop(path)
                self._observe(path, None, now, out)  # settle starts again from the fresh figures
                return
            verdict = self._gate.examine(path, st.st_size) if self._gate is not None else None
            if isinstance(verdict, Wait):
                self._schedule(path, candidate, now, after=self._recheck)
                return
            del self._candidates[path]
            self._reported[path] = values
            out.append((path, st if verdict is None else (st, verdict.reason)))

    @staticmethod
    def _same_through_open(path: str, values: tuple[int, int]) -> bool:
        """Do ``values`` (size, mtime) still hold when asked through an open? NFS (close-to-open) and
        SMB answer an open from the server, not from the attribute cache that lstat used."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return True  # the hash step's own open says what is wrong with the file, if anything
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return (st.st_size, st.st_mtime_ns) == values

    def _schedule(self, path: str, candidate: _Candidate, now: float, *, after: float | None = None) -> None:
        candidate.due = now + (self._quiet_for if after is None else after)
        heapq.heappush(self._due, (candidate.due, path))

    def _recheck_empty(self, path: str, now: float) -> None:
        # Not a candidate: an empty file may sit there for hours and must not count as pending.
        self._empty[path] = due = now + self._poll_interval
        heapq.heappush(self._due, (due, path))

    def _drop(self, path: str) -> None:
        if self._gate is not None:
            self._gate.forget(path)
        self._candidates.pop(path, None)
        self._reported.pop(path, None)
        self._refused.discard(path)
        self._empty.pop(path, None)

    def _deliver(self, out: list[_Callback]) -> None:
        ready: list[tuple[Path, os.stat_result]] = []
        for path, what in out:
            if isinstance(what, os.stat_result):
                ready.append((Path(path), what))
                continue
            try:
                if isinstance(what, str):
                    if self._on_refused is not None:
                        self._on_refused(Path(path), what)
                elif self._on_incomplete is not None:
                    self._on_incomplete(Path(path), *what)
            except Exception:
                log.exception("watcher callback failed", file=path)
        for start in range(0, len(ready), BATCH_SIZE):
            self._deliver_ready(ready[start:start + BATCH_SIZE])

    def _deliver_ready(self, batch: list[tuple[Path, os.stat_result]]) -> None:
        if self._on_ready_batch is not None and len(batch) > 1:
            try:
                self._on_ready_batch(batch)
                return
            except Exception:
                log.exception("watcher batch callback failed; handing the files over one by one")
        for path, st in batch:
            try:
                self._on_ready(path, st)
            except Exception:
                log.exception("watcher callback failed", file=str(path))
