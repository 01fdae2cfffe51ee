r"""The poller: where inotify hears nothing (network mounts), find what changed by folder timestamps.

A poller that snapshots the whole tree every poll (an ``lstat`` and an object per file) costs more
with every file the inbox holds, idle or not (``bench/RESULTS.md`` has the figures that led here).
:class:`FolderPoller` instead ``lstat``\ s each known folder every ``poll_interval`` and compares its
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
"""

from __future__ import annotations

import os
import stat as statmod
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from hotfolder.watch.ignore import compile_rules, kept_entries

log = structlog.get_logger("hotfolder.watcher")

Sighting = os.stat_result | None  # a stat the walk already has, or None: "lstat it yourself"

# --- polling ----------------------------------------------------------------------------------------

# A folder whose mtime or ctime is this close to the moment we took its lstat may change again
# without either moving (see "Coarse timestamps" above): 2 s, the coarsest tick in use (FAT, some SMB
# servers), plus 1 s for a file server's clock running behind ours.
RACY_WINDOW_NS = 3_000_000_000

_FolderKey = tuple[int, int, int]  # (st_mtime_ns, st_ctime_ns, st_ino)


def _folder_key(st: os.stat_result) -> _FolderKey:
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino


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
        nominate: Callable[[dict[str, Sighting]], None],
        stop: threading.Event | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
        listing_lag: float = 0.0,
    ) -> None:
        self.root = root
        # A network mount may answer a folder's lstat and listing from a cache this many seconds
        # old: a folder changed that recently may have been listed from before the change.
        self._racy_window_ns = RACY_WINDOW_NS + int(listing_lag * 1e9)
        self._rules = compile_rules(tuple(ignore))
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
                for entry, is_folder in kept_entries(listing, self._rules):
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
        changed: dict[str, Sighting] = {
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
        gone: dict[str, Sighting] = {}
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


