"""The watcher against real files and real threads, in both native (inotify) and polling mode.

Timing is never asserted; every check is "reported (or not) by a generous deadline". Negative checks
use a sentinel file written *after* the files that must stay unreported: once the sentinel is
reported, anything written before it would have been reported too.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest

import hotfolder.watch.watcher as watcher_module
from hotfolder.config import DEFAULT_IGNORE
from hotfolder.watch.ignore import is_ignored
from hotfolder.watch.mounts import NETWORK_FS_TYPES, choose_method, filesystem_type
from hotfolder.watch.watcher import Watcher

SETTLE = 0.25
DEADLINE = 8.0  # generous: the suite may share two cores with other suites

# watchdog 7.1 warns when its own IN_CREATE handling and its recursive walk both add a watch for a
# new folder (a harmless race inside watchdog); under -W error that warning would kill its thread.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")


def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


class Recorder:
    """Collects what the watcher reports, from its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ready: list[tuple[str, int]] = []
        self.refused: list[tuple[str, str]] = []

    def on_ready(self, path: Path, st: os.stat_result) -> None:
        with self._lock:
            self.ready.append((str(path), st.st_size))

    def on_refused(self, path: Path, reason: str) -> None:
        with self._lock:
            self.refused.append((str(path), reason))

    def sizes(self, path: Path) -> list[int]:
        with self._lock:
            return [size for p, size in self.ready if p == str(path)]

    def reported(self, path: Path) -> bool:
        return bool(self.sizes(path))

    def reasons(self, path: Path) -> list[str]:
        with self._lock:
            return [reason for p, reason in self.refused if p == str(path)]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "fulcrum" / "rec-1").mkdir(parents=True)
    return folder


@pytest.fixture(params=["native", "polling"])
def watch(request: pytest.FixtureRequest, inbox: Path) -> Iterator[Callable[..., tuple[Watcher, Recorder]]]:
    started: list[Watcher] = []

    def start(**kwargs: object) -> tuple[Watcher, Recorder]:
        rec = Recorder()
        options: dict = {"method": request.param, "settle": SETTLE, "poll_interval": 0.1,
                         "on_ready": rec.on_ready, "on_refused": rec.on_refused, **kwargs}
        watcher = Watcher(inbox, **options)
        watcher.start()
        started.append(watcher)
        assert watcher.mode == request.param
        return watcher, rec

    yield start
    for watcher in started:
        watcher.stop()


def write(path: Path, data: bytes = b"%PDF-1.7 scan") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def settle_a_little() -> None:
    # After a sentinel is reported: give stragglers a few more settle periods and polls.
    time.sleep(SETTLE * 2)


# --- behaviour, native and polling ------------------------------------------------------------------


def test_files_present_at_start_are_reported(watch, inbox: Path) -> None:
    early = write(inbox / "fulcrum" / "rec-1" / "photo.jpg", b"x" * 1000)
    _, rec = watch()
    assert wait_for(lambda: rec.reported(early))
    assert rec.sizes(early) == [1000]


def test_new_record_folder_after_start(watch, inbox: Path) -> None:
    _, rec = watch()
    fresh = write(inbox / "fulcrum" / "rec-2" / "scan.pdf")
    late_target = write(inbox / "espo" / "lead-9" / "a.pdf")
    assert wait_for(lambda: rec.reported(fresh) and rec.reported(late_target))


def test_file_renamed_into_place_is_reported_once(watch, inbox: Path) -> None:
    _, rec = watch()
    tmp = write(inbox / "fulcrum" / "rec-1" / "x.tmp", b"y" * 300)
    final = tmp.with_name("x.pdf")
    tmp.rename(final)
    assert wait_for(lambda: rec.reported(final))
    settle_a_little()
    assert rec.sizes(final) == [300]
    assert not rec.reported(tmp)


def test_folder_moved_into_inbox_with_files(watch, inbox: Path, tmp_path: Path) -> None:
    _, rec = watch()
    staged = tmp_path / "staging" / "rec-7"
    one, two = write(staged / "one.jpg"), write(staged / "sub" / "two.jpg")
    staged.rename(inbox / "fulcrum" / "rec-7")
    moved = [inbox / "fulcrum" / "rec-7" / "one.jpg", inbox / "fulcrum" / "rec-7" / "sub" / "two.jpg"]
    assert wait_for(lambda: all(rec.reported(p) for p in moved))
    assert not rec.reported(one) and not rec.reported(two)


def test_file_moved_in_from_outside_is_reported_once(watch, inbox: Path, tmp_path: Path) -> None:
    _, rec = watch()
    outside = write(tmp_path / "elsewhere" / "scan.pdf", b"m" * 700)
    moved = inbox / "fulcrum" / "rec-1" / "scan.pdf"
    outside.rename(moved)  # one rename(2): the folder changes, the file never does
    assert wait_for(lambda: rec.reported(moved))
    settle_a_little()
    assert rec.sizes(moved) == [700]


def test_nested_record_folder_filled_before_anyone_looks(watch, inbox: Path) -> None:
    _, rec = watch()
    record = inbox / "fulcrum" / "rec-3"
    files = {write(record / "a.pdf", b"a" * 10): 10, write(record / "sub" / "deeper" / "b.jpg", b"b" * 20): 20}
    assert wait_for(lambda: all(rec.reported(p) for p in files))
    later = write(record / "sub" / "c.jpg", b"c" * 30)  # the new folders are watched from now on
    assert wait_for(lambda: rec.reported(later))
    settle_a_little()
    assert {p: rec.sizes(p) for p in [*files, later]} == {p: [n] for p, n in [*files.items(), (later, 30)]}


def test_folder_renamed_over_an_empty_one(watch, inbox: Path, tmp_path: Path) -> None:
    empty = inbox / "fulcrum" / "rec-1"
    _, rec = watch()
    staged = tmp_path / "staging" / "rec-1"
    write(staged / "one.jpg", b"1" * 11)
    write(staged / "sub" / "two.jpg", b"2" * 22)
    os.rename(staged, empty)  # replaces the empty folder: same path, another inode
    one, two = empty / "one.jpg", empty / "sub" / "two.jpg"
    assert wait_for(lambda: rec.reported(one) and rec.reported(two))
    settle_a_little()
    assert (rec.sizes(one), rec.sizes(two)) == ([11], [22])


def test_file_renamed_over_a_reported_one_is_reported_again(watch, inbox: Path) -> None:
    _, rec = watch()
    path = write(inbox / "fulcrum" / "rec-1" / "plan.pdf", b"first")
    assert wait_for(lambda: rec.sizes(path) == [5])
    new_version = write(path.with_name("plan.pdf.part"), b"second version")  # ignored name
    new_version.replace(path)  # the way editors and sync tools save: same name, another inode
    assert wait_for(lambda: rec.sizes(path) == [5, 14])


def test_folder_mtime_set_back_after_a_file_was_added(watch, inbox: Path) -> None:
    # rsync -t and touch -d set a folder's mtime back; the poller sees the ctime move.
    record = inbox / "fulcrum" / "rec-1"
    before = os.lstat(record)
    _, rec = watch()
    added = write(record / "synced.pdf", b"s" * 42)
    os.utime(record, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert wait_for(lambda: rec.reported(added))
    assert rec.sizes(added) == [42]


def test_file_written_slowly_is_reported_after_last_write(watch, inbox: Path) -> None:
    _, rec = watch(settle=0.3)  # pieces 0.08 s apart: a writer stalled for 0.3 s would be "finished"
    path = inbox / "fulcrum" / "rec-1" / "big.tif"
    with path.open("wb") as f:
        for _ in range(12):
            f.write(b"z" * 4096)
            f.flush()
            time.sleep(0.08)
            assert not rec.reported(path), "reported while still being written"
    assert wait_for(lambda: rec.reported(path))
    settle_a_little()
    assert rec.sizes(path) == [12 * 4096]


def test_ignored_names_are_never_reported(watch, inbox: Path) -> None:
    _, rec = watch()
    record = inbox / "fulcrum" / "rec-1"
    ignored = [write(record / name) for name in (".hidden", "a.tmp", "~$doc.docx", "Thumbs.db", "b.part")]
    ignored.append(write(record / "@eaDir" / "photo.jpg" / "SYNOPHOTO_THUMB_M.jpg"))
    ignored.append(write(inbox / ".Trash-1000" / "files" / "old.pdf"))
    sentinel = write(record / "sentinel.pdf")
    assert wait_for(lambda: rec.reported(sentinel))
    settle_a_little()
    assert [p for p in ignored if rec.reported(p)] == []


def test_zero_byte_file_waits_for_content(watch, inbox: Path) -> None:
    _, rec = watch()
    empty = write(inbox / "fulcrum" / "rec-1" / "later.pdf", b"")
    sentinel = write(inbox / "fulcrum" / "rec-1" / "sentinel.pdf")
    assert wait_for(lambda: rec.reported(sentinel))
    settle_a_little()
    assert not rec.reported(empty)
    empty.write_bytes(b"filled by the scanner")
    assert wait_for(lambda: rec.reported(empty))
    assert rec.sizes(empty) == [len(b"filled by the scanner")]


def test_symlinks_and_fifos_are_refused_never_opened(watch, inbox: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere" / "secret.pdf")
    record = inbox / "fulcrum" / "rec-1"
    link = record / "link.pdf"
    link.symlink_to(outside)
    folder_link = record / "linked-folder"
    folder_link.symlink_to(outside.parent, target_is_directory=True)
    _, rec = watch()
    fifo = record / "pipe.pdf"
    os.mkfifo(fifo)  # created after start, so the event path sees it too
    sentinel = write(record / "sentinel.pdf")
    assert wait_for(lambda: rec.reported(sentinel) and rec.reasons(fifo) and rec.reasons(link))
    settle_a_little()
    assert rec.reasons(link) == ["symlink: not followed"]
    assert rec.reasons(folder_link) == ["symlink: not followed"]
    assert rec.reasons(fifo) == ["FIFO: not a regular file"]
    assert not any(rec.reported(p) for p in (link, fifo, folder_link / "secret.pdf"))


def test_file_changed_after_report_is_reported_again(watch, inbox: Path) -> None:
    watcher, rec = watch()
    path = write(inbox / "fulcrum" / "rec-1" / "note.txt", b"first")
    assert wait_for(lambda: rec.sizes(path) == [5])
    with path.open("ab") as f:
        f.write(b" and second")
    if watcher.mode == "polling":
        # An append leaves the folder as it was, so the poller does not see it (by design: see
        # "What it does not see" in daemon/hotfolder/watch/poller.py); the periodic rescan does, here on demand.
        watcher.rescan()
    assert wait_for(lambda: rec.sizes(path) == [5, 16])


def test_failing_callback_does_not_stop_the_watcher(watch, inbox: Path) -> None:
    seen: list[str] = []

    def explode_once(path: Path, st: os.stat_result) -> None:
        seen.append(path.name)
        if len(seen) == 1:
            raise RuntimeError("runner hiccup")

    watch(on_ready=explode_once)
    write(inbox / "fulcrum" / "rec-1" / "a.pdf")
    assert wait_for(lambda: seen == ["a.pdf"])
    write(inbox / "fulcrum" / "rec-1" / "b.pdf")
    assert wait_for(lambda: seen == ["a.pdf", "b.pdf"])


def test_forget_and_pending_count(watch, inbox: Path, tmp_path: Path) -> None:
    path = write(inbox / "fulcrum" / "rec-1" / "a.pdf", b"v1")
    watcher, rec = watch()
    assert watcher.pending_count() > 0  # the start-up scan nominated it
    assert wait_for(lambda: rec.sizes(path) == [2])
    assert wait_for(lambda: watcher.pending_count() == 0)
    path.rename(tmp_path / "taken.pdf")  # what the daemon does with a finished file
    watcher.forget(path)
    settle_a_little()
    assert rec.sizes(path) == [2]


def test_periodic_rescan_finds_what_events_missed(inbox: Path) -> None:
    # Polling with a poll interval far beyond the test: only the periodic rescan can find the file.
    rec = Recorder()
    watcher = Watcher(inbox, method="polling", settle=SETTLE, poll_interval=3600, rescan_interval=0.3,
                      on_ready=rec.on_ready)
    watcher.start()
    try:
        path = write(inbox / "fulcrum" / "rec-1" / "quiet.pdf")
        assert wait_for(lambda: rec.reported(path))
    finally:
        watcher.stop()
        watcher.stop()  # idempotent


def test_polling_stop_is_prompt_between_polls(inbox: Path) -> None:
    watcher = Watcher(inbox, method="polling", settle=SETTLE, poll_interval=3600, on_ready=lambda p, s: None)
    watcher.start()
    stopper = threading.Thread(target=watcher.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=DEADLINE)  # the next poll is an hour away: stop must not wait for it
    assert not stopper.is_alive()  # and stop() returns only once every thread, the poller's too, is joined


def test_inotify_overflow_triggers_rescan(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    watcher = Watcher(inbox, method="native", settle=SETTLE, on_ready=lambda p, s: None)
    watcher.start()
    reasons: list[str] = []
    real = watcher._full_rescan

    def counting(*, reason: str) -> int:
        reasons.append(reason)
        return real(reason=reason)

    monkeypatch.setattr(watcher, "_full_rescan", counting)
    try:
        # The exact record watchdog 7.1's InotifyFD logs when the kernel reports IN_Q_OVERFLOW.
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert wait_for(lambda: "overflow" in reasons)
    finally:
        watcher.stop()


def test_auto_falls_back_to_polling_when_inotify_is_exhausted(
    inbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_watches_left() -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(watcher_module, "Observer", no_watches_left)
    rec = Recorder()
    watcher = Watcher(inbox, method="auto", settle=SETTLE, poll_interval=0.1, on_ready=rec.on_ready)
    if watcher.mode != "native":
        pytest.skip("tmp_path is on a network file system here")
    watcher.start()
    try:
        assert watcher.mode == "polling"
        path = write(inbox / "fulcrum" / "rec-1" / "a.pdf")
        assert wait_for(lambda: rec.reported(path))
    finally:
        watcher.stop()
    explicit = Watcher(inbox, method="native", on_ready=rec.on_ready)
    with pytest.raises(OSError, match="watch limit"):
        explicit.start()
    explicit.stop()


# --- pure helpers ------------------------------------------------------------------------------------

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:31 / /srv rw,relatime shared:2 - ext4 /dev/sdb1 rw
40 35 0:45 / /srv/share rw,relatime shared:20 - nfs4 fileserver:/export/scans rw,vers=4.2
41 35 0:46 / /srv/shared rw,relatime - xfs /dev/sdc1 rw
42 22 0:47 / /mnt/scan\\040room rw,relatime - cifs //nas/scans rw
43 22 0:48 / /mnt/stacked rw - ext4 /dev/sdd1 rw
44 43 0:49 / /mnt/stacked rw master:3 - fuse.sshfs me@host:/x rw
"""


@pytest.fixture
def mountinfo(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return path


@pytest.mark.parametrize(("path", "fstype"), [
    ("/srv/share/inbox", "nfs4"),
    ("/srv/share", "nfs4"),
    ("/srv/shared/inbox", "xfs"),      # a sibling with a longer name is not inside /srv/share
    ("/srv/other", "ext4"),
    ("/home/scanner", "ext4"),
    ("/mnt/scan room/inbox", "cifs"),  # \040 in mountinfo is a space
    ("/mnt/stacked/inbox", "fuse.sshfs"),  # the later mount on the same point wins
])
def test_filesystem_type(mountinfo: Path, path: str, fstype: str) -> None:
    assert filesystem_type(Path(path), mountinfo) == fstype


def test_filesystem_type_without_mountinfo(tmp_path: Path) -> None:
    assert filesystem_type(Path("/srv"), tmp_path / "missing") is None


def test_choose_method(mountinfo: Path) -> None:
    assert choose_method("auto", Path("/srv/share/inbox"), mountinfo=mountinfo) == "polling"
    assert choose_method("auto", Path("/home/scanner/inbox"), mountinfo=mountinfo) == "native"
    assert choose_method("auto", Path("/mnt/scan room/in"), mountinfo=mountinfo) == "polling"
    assert choose_method("native", Path("/srv/share/inbox"), mountinfo=mountinfo) == "native"
    assert choose_method("polling", Path("/home"), mountinfo=mountinfo) == "polling"
    assert {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p"} <= NETWORK_FS_TYPES
    with pytest.raises(ValueError, match="inotify"):
        choose_method("inotify", Path("/home"))


@pytest.mark.parametrize(("rel", "ignored"), [
    ("fulcrum/rec-1/scan.pdf", False),
    ("fulcrum/rec-1/.hidden", True),
    ("fulcrum/rec-1/a.tmp", True),
    ("fulcrum/rec-1/A.TMP", True),
    ("fulcrum/rec-1/movie.mp4.part", True),
    ("fulcrum/rec-1/x.crdownload", True),
    ("fulcrum/rec-1/~$doc.docx", True),
    ("fulcrum/rec-1/Thumbs.db", True),
    ("fulcrum/rec-1/desktop.ini", True),
    ("fulcrum/rec-1/._photo.jpg", True),
    ("fulcrum/rec-1/@eaDir/photo.jpg/SYNOFILE_THUMB.jpg", True),
    ("fulcrum/@eaDir/x.pdf", True),
    ("fulcrum/rec-1/@eaDir", False),      # a *file* named @eaDir is not the folder pattern
    ("fulcrum/.git/objects/ab", True),    # ".*" matches hidden folders too
    ("fulcrum/rec-1/report.tmp.pdf", False),
])
def test_is_ignored(rel: str, ignored: bool) -> None:
    assert is_ignored(PurePosixPath(rel), DEFAULT_IGNORE) is ignored


def test_is_ignored_folder_flag_and_empty_patterns() -> None:
    assert is_ignored(PurePosixPath("fulcrum/rec-1/@eaDir"), DEFAULT_IGNORE, is_folder=True)
    assert not is_ignored(PurePosixPath("a/b.tmp"), ())
    assert is_ignored(PurePosixPath("a/b.pdf"), ["a/"])
    assert not is_ignored(PurePosixPath("a"), ["a/"])


def test_files_found_together_are_handed_over_in_batches(
    watch: Callable[..., tuple[Watcher, Recorder]], inbox: Path
) -> None:
    """A rescan that finds many settled files hands them over in few calls (one journal
    transaction each in the daemon), and still exactly once per file."""
    for number in range(120):
        write(inbox / "fulcrum" / f"rec-{number % 6}" / f"scan-{number}.pdf")
    batches: list[list[str]] = []
    lock = threading.Lock()

    def on_ready_batch(files: list[tuple[Path, os.stat_result]]) -> None:
        with lock:
            batches.append([str(path) for path, _ in files])

    _watcher, rec = watch(on_ready_batch=on_ready_batch)
    assert wait_for(lambda: sum(map(len, batches)) + len(rec.ready) == 120)
    settle_a_little()
    handed = [path for batch in batches for path in batch] + [path for path, _ in rec.ready]
    assert len(handed) == len(set(handed)) == 120
    assert max(map(len, batches)) > 1  # found together, handed over together


def test_the_first_thousand_due_files_are_handed_over_before_the_rest_are_sampled(
    watch: Callable[..., tuple[Watcher, Recorder]], inbox: Path
) -> None:
    """Thousands of files coming due together: the first batch reaches the runner before the
    others are looked at again, so a file removed meanwhile is never handed over."""
    # One folder: one listing stamps them all, so they all come due in the same pass.
    files = [write(inbox / "fulcrum" / "rec-1" / f"scan-{number}.pdf") for number in range(2500)]
    batches: list[list[Path]] = []
    lock = threading.Lock()

    def on_ready_batch(batch: list[tuple[Path, os.stat_result]]) -> None:
        with lock:
            if not batches:  # someone tidies the inbox while hotfolder journals the first batch
                first = {path for path, _ in batch}
                for path in files:
                    if path not in first:
                        path.unlink()
            batches.append([path for path, _ in batch])

    _watcher, rec = watch(on_ready_batch=on_ready_batch)
    assert wait_for(lambda: bool(batches))
    settle_a_little()
    with lock:
        handed = [path for batch in batches for path in batch] + [path for path, _ in rec.ready]
    assert len(batches[0]) == watcher_module.BATCH_SIZE
    assert sorted(handed) == sorted(batches[0])  # none of the removed files came through
