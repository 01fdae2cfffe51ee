"""Find finished files in the inbox: events or a poller nominate, ``os.lstat`` decides, a settle timer releases.

Theory of operation
-------------------
Three sources *nominate* paths, and nothing else: the watcher proper (watchdog's inotify observer,
or on network mounts, where inotify never hears about writes made by other machines, our own
:class:`~hotfolder.watch.poller.FolderPoller`), a full rescan (at start, every ``rescan_interval``
and after an inotify queue overflow), and :meth:`Watcher.forget`.
Nominations are cheap: they go into one locked dict and wake the settle thread.

The settle thread alone owns the tracking state, so it needs no lock of its own. For each nominated
path it takes ``os.lstat`` (never ``stat``) and tells the :class:`~hotfolder.watch.tracker.ReadinessTracker`,
which holds every rule of "when is a file ready" and does no I/O; this module is the I/O around it:
it runs the readiness tests the tracker asks for (:mod:`hotfolder.watch.examine`), hands ready files
over, and logs what the tracker says once. A candidate is sampled again when it is due (a heap
ordered by due time) or when an event nominates it, so a 100,000-file rescan costs about two
``lstat`` per file rather than one per file per tick.

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
* Zero-byte files are not candidates (the tracker's rules); when polling, an empty file is looked at
  again every ``poll_interval`` until it has content, as the poller cannot see a fill.
* ``FileClosedEvent`` (``IN_CLOSE_WRITE``) is only a nomination, never a shortcut past settle: SMB
  clients and scanner drivers open and close a file several times while writing it.
* Forgotten entries: "already reported" memory is pruned at each full rescan for paths the walk
  did not see and ``lstat`` confirms gone, so it stays proportional to the files in the inbox.

The periodic rescan and the poll interval use wall time (``threading.Event.wait``); the settle
measurement uses the injectable ``clock``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat as statmod
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

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

from hotfolder.config import DEFAULT_IGNORE
from hotfolder.events import EventBus, FileReadyAfterWaiting, FileWaiting
from hotfolder.liveness import Liveness, progress
from hotfolder.watch import status
from hotfolder.watch.examine import Examiner
from hotfolder.watch.ignore import compile_rules, kept_entries
from hotfolder.watch.mounts import AttributeCache, choose_method
from hotfolder.watch.poller import FolderPoller, Sighting
from hotfolder.watch.tracker import (
    EXAMINE,
    ReadinessTracker,
    Ready,
    Refuse,
    Refused,
    Verdict,
    Wait,
)

log = structlog.get_logger("hotfolder.watcher")

BATCH_SIZE = 1000  # settled files handed over per call: one journal transaction each
DUE_COALESCE = 0.05  # seconds: candidates coming due this close together are released in one pass

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


# --- the settle thread's edge ---------------------------------------------------------------------

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
        examiner: Examiner | None = None,
        on_incomplete: Callable[[Path, os.stat_result, str], None] | None = None,
        incomplete_timeout: float = 600.0,
        status_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        cache: AttributeCache | None = None,
        events: EventBus | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self.inbox = Path(os.path.abspath(inbox))
        self._events = events if events is not None else EventBus()
        liveness = liveness if liveness is not None else Liveness(stuck_after=float("inf"))
        # A scan of a dead network mount hangs in lstat: these stop the watchdog pings (hotfolder.liveness).
        self._settle_beat = liveness.heartbeat("watcher-settle")
        self._rescan_beat = liveness.heartbeat("watcher-rescan")
        self._method = method
        self.mode: str = choose_method(method, self.inbox)
        self._settle = max(0.0, settle)
        # The inbox mount's attribute cache (None on a local file system): see hotfolder/watch/mounts.py.
        # Where no open can bypass it, figures must hold for settle plus the cache to have been
        # fetched afresh at least settle apart; where an open does, the last look is taken so.
        self._cache = cache
        self._tick = max(0.01, min(self._settle / 4, 0.25))
        self._poll_interval = poll_interval
        self._rescan_interval = rescan_interval
        self._ignore = tuple(ignore)
        self._rules = compile_rules(self._ignore)
        self._on_ready = on_ready
        # Optional: files that settle together (a rescan at start finds thousands) are handed over
        # in one call, so the daemon can journal them in one transaction instead of one each.
        self._on_ready_batch = on_ready_batch
        self._on_refused = on_refused
        # Settled files pass the "is it finished?" tests before they are handed over.
        look_through_open = cache is not None and cache.revalidated_on_open
        self._examiner = examiner if examiner is not None else Examiner(
            check_writers=False, check_complete=False, look_through_open=look_through_open)
        self._on_incomplete = on_incomplete
        self._status_file = status_file
        self._clock = clock
        # Owned by the settle thread only. A file that is not ready is looked at again every
        # ``recheck`` (a writer's close event, with inotify, brings the look forward).
        self._tracker = ReadinessTracker(
            quiet_for=self._settle + (cache.settle_lag if cache is not None else 0.0),
            recheck=max(0.5, min(self._settle, 5.0)),
            incomplete_timeout=incomplete_timeout,
        )

        self._root = os.fspath(self.inbox)
        self._prefix = self._root.rstrip(os.sep) + os.sep

        # Shared between nominating threads and the settle thread, guarded by _cond.
        self._cond = threading.Condition()
        # Nominated paths with the clock time of the nomination: a stat the walk took counts from
        # then, not from when the settle thread gets to it (at start, after a walk of 100,000 files).
        self._incoming: dict[str, tuple[Sighting, float]] = {}
        self._forgotten: set[str] = set()
        self._reconcile: list[set[str]] = []
        self._in_flight = 0

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
        if self.mode == "polling":
            self._tracker.empty_recheck = self._poll_interval  # the poller cannot see an empty file fill
        self._examiner.start(self.inbox, self.mode)
        if self._status_file is not None:
            self._write_waiting()  # an old list may be stale
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
            return len(self._incoming) + len(self._forgotten) + self._in_flight + self._tracker.pending_count()

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
            quiet_for=self._tracker.quiet_for, remedy=cache.remedy,
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

    def _submit(self, sightings: dict[str, Sighting]) -> None:
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
            progress()
            stack.extend(subfolders)
            folders += len(subfolders)
            if seen is not None:
                seen.update(batch)
            if batch:
                self._submit(batch)
        return folders

    def _scan_one(self, folder: str) -> tuple[dict[str, Sighting], list[str]]:
        batch: dict[str, Sighting] = {}
        subfolders: list[str] = []
        try:
            entries = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return batch, subfolders
        except OSError as exc:
            log.warning("cannot list folder", folder=folder, error=str(exc))
            return batch, subfolders
        with entries:
            for entry, is_folder in kept_entries(entries, self._rules):
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
                with self._rescan_beat.busy():
                    self._full_rescan(reason=reason)
            except Exception:
                log.exception("rescan failed", inbox=self._root)

    # --- the settle thread ---

    def _settle_loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stop.is_set() or self._incoming or self._forgotten or self._reconcile
                           or self._tracker.next_due() is not None):
                    self._cond.wait()  # nothing pending: sleep without polling
                if self._stop.is_set():
                    return
                incoming, self._incoming = self._incoming, {}
                forgotten, self._forgotten = self._forgotten, set()
                reconcile, self._reconcile = self._reconcile, []
                self._in_flight = len(incoming) + len(forgotten)
            try:
                with self._settle_beat.busy():
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
        due = self._tracker.next_due()
        if due is None:
            return self._tick
        until_due = max(0.0, due - self._clock())
        return min(self._tick, until_due + DUE_COALESCE)

    def _process(
        self, incoming: dict[str, tuple[Sighting, float]], forgotten: set[str], reconcile: list[set[str]]
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
            self._tracker.forget(path)
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
        if self._tracker.waiting_changed:
            self._write_waiting()

    def _release_due(self, now: float, out: list[_Callback]) -> None:
        """Sample again every path whose time has come, handing them over by the batch (a start scan
        brings thousands due at once, and each takes an lstat: the first should not wait for the last)."""
        for path in self._tracker.due(now):
            self._observe(path, None, now, out)
            if len(out) >= BATCH_SIZE:
                self._deliver(out)
                out.clear()

    def _reconcile_with(self, seen: set[str], now: float, out: list[_Callback]) -> None:
        # Whatever we remember that the walk did not meet is either gone or arrived after its folder
        # was listed; lstat tells which, so "already reported" memory shrinks with the inbox.
        for path in self._tracker.known() - seen:
            self._observe(path, None, now, out)

    def _observe(self, path: str, sighting: Sighting, now: float, out: list[_Callback]) -> None:
        """Tell the tracker what lstat says of ``path`` and do what it answers."""
        st = sighting
        if st is None:
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                self._tracker.gone(path)
                return
            except OSError as exc:
                log.warning("cannot lstat file; will look again", file=path, error=str(exc))
                self._tracker.look_failed(path, now)
                return
        if statmod.S_ISREG(st.st_mode):
            verdict = self._tracker.file_seen(path, st.st_size, st.st_mtime_ns, now)
            if verdict is EXAMINE:
                answers = self._examiner.answers(path, st.st_size)
                if answers is None:
                    self._tracker.gone(path)  # its next nomination, if any, finds what is there
                    return
                verdict = self._tracker.examined(path, answers, now)
            self._act(path, st, verdict, out)
        elif statmod.S_ISDIR(st.st_mode):
            self._tracker.gone(path)
        else:
            self._act(path, st, self._tracker.other_seen(path, _refusal(st.st_mode)), out)

    def _act(self, path: str, st: os.stat_result, verdict: Verdict, out: list[_Callback]) -> None:
        if isinstance(verdict, Ready):
            if verdict.waited:
                self._events.emit(FileReadyAfterWaiting(path))
            out.append((path, st))
        elif isinstance(verdict, Wait):
            if verdict.first:
                self._events.emit(FileWaiting(path, verdict.reason))
        elif isinstance(verdict, Refuse):
            out.append((path, (st, verdict.reason)))
        elif isinstance(verdict, Refused):
            out.append((path, verdict.reason))

    def _write_waiting(self) -> None:
        if self._status_file is not None:
            status.write_waiting(self._status_file, self._tracker.waiting(), clock_now=self._clock())

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
