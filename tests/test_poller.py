"""The folder poller on its own: real files in tmp_path, one poll at a time, no threads but one.

Each test primes a :class:`FolderPoller` on a small inbox, changes the tree, calls ``poll()`` and
checks which paths were nominated (what the settle thread would then ``lstat``). Time enters in one
place only, the racy rule, through the poller's injectable wall clock: :func:`an_hour_later` puts
"now" an hour after every timestamp in the tree (nothing is racy); the real clock makes everything
just created racy.

What a real file system cannot be made to do on demand is keep a folder's mtime *and* ctime still
while a name is added (a coarse timestamp tick: a FAT or SMB share, an old NFS server, or just the
same ext4 jiffy). :func:`added_in_the_same_tick` stands in for it by giving the poller the key the
folder has now, as if its listing had been taken just before the name arrived, in the same tick.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hotfolder.config import DEFAULT_IGNORE
from hotfolder.watch.poller import FolderPoller

HOUR_NS = 3600 * 10**9


def an_hour_later() -> int:
    return time.time_ns() + HOUR_NS


class Nominated:
    """The poller's nominate callback: remembers every path, in order."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, batch: dict[str, object]) -> None:
        self.paths.extend(batch)

    def take(self) -> set[str]:
        taken, self.paths = set(self.paths), []
        return taken


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "fulcrum" / "rec-1").mkdir(parents=True)
    (folder / "fulcrum" / "rec-1" / "old.pdf").write_bytes(b"old")
    (folder / "espo" / "lead-1").mkdir(parents=True)
    return folder


def primed(inbox: Path, wall_ns: Callable[[], int] = an_hour_later) -> tuple[FolderPoller, Nominated]:
    nominated = Nominated()
    poller = FolderPoller(str(inbox), ignore=DEFAULT_IGNORE, nominate=nominated, wall_ns=wall_ns)
    poller.prime()
    return poller, nominated


def write(path: Path, data: bytes = b"%PDF-1.7 scan") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def added_in_the_same_tick(poller: FolderPoller, folder: Path) -> None:
    """Make the poller hold ``folder``'s present key, as a coarse timestamp tick would have."""
    st = os.lstat(folder)
    poller._folders[str(folder)].key = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def test_priming_nominates_nothing_and_an_unchanged_tree_nothing_either(inbox: Path) -> None:
    poller, nominated = primed(inbox)
    assert poller.folder_count() == 5  # inbox, fulcrum, rec-1, espo, lead-1
    poller.poll()
    poller.poll()
    assert nominated.take() == set()


def test_new_file_in_a_known_folder_is_nominated_once(inbox: Path) -> None:
    poller, nominated = primed(inbox)
    fresh = write(inbox / "fulcrum" / "rec-1" / "scan.pdf")
    poller.poll()
    assert nominated.take() == {fresh}
    poller.poll()
    assert nominated.take() == set()


def test_new_record_folder_filled_before_the_poll(inbox: Path) -> None:
    poller, nominated = primed(inbox)
    record = inbox / "fulcrum" / "rec-2"
    files = {write(record / "a.pdf"), write(record / "sub" / "deeper" / "b.jpg")}
    poller.poll()
    assert nominated.take() == files
    later = write(record / "sub" / "c.jpg")  # the new folders are polled from now on
    poller.poll()
    assert nominated.take() == {later}


def test_rename_within_a_folder_and_from_outside(inbox: Path, tmp_path: Path) -> None:
    poller, nominated = primed(inbox)
    record = inbox / "fulcrum" / "rec-1"
    (record / "old.pdf").rename(record / "renamed.pdf")
    outside = write(tmp_path / "elsewhere" / "moved.pdf")
    os.rename(outside, record / "moved.pdf")
    poller.poll()
    # The vanished name is nominated too: the settle thread's lstat then forgets it.
    assert nominated.take() == {str(record / "old.pdf"), str(record / "renamed.pdf"), str(record / "moved.pdf")}


def test_file_renamed_over_another_is_nominated(inbox: Path) -> None:
    poller, nominated = primed(inbox)
    record = inbox / "fulcrum" / "rec-1"
    replacement = write(inbox / "fulcrum" / "rec-1" / "new.pdf", b"second version")
    poller.poll()
    assert nominated.take() == {replacement}
    os.replace(replacement, record / "old.pdf")  # same name as before, another inode
    poller.poll()
    assert nominated.take() == {str(record / "old.pdf"), replacement}


def test_folder_renamed_over_an_empty_one(inbox: Path, tmp_path: Path) -> None:
    empty = inbox / "espo" / "lead-1"
    poller, nominated = primed(inbox)
    staged = tmp_path / "staging" / "lead-1"
    files = {str(empty / "a.pdf"), str(empty / "sub" / "b.pdf")}
    write(staged / "a.pdf")
    write(staged / "sub" / "b.pdf")
    os.rename(staged, empty)
    poller.poll()
    assert nominated.take() == files
    later = write(empty / "sub" / "c.pdf")  # the new folder is the one polled now, not the old inode
    poller.poll()
    assert nominated.take() == {later}


def test_removed_folder_is_forgotten_with_its_files(inbox: Path) -> None:
    poller, nominated = primed(inbox)
    shutil.rmtree(inbox / "fulcrum" / "rec-1")
    poller.poll()
    assert nominated.take() == {str(inbox / "fulcrum" / "rec-1" / "old.pdf")}
    assert poller.folder_count() == 4


def test_symlinked_and_ignored_folders_are_not_entered(inbox: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    write(outside / "secret.pdf")
    poller, nominated = primed(inbox)
    record = inbox / "fulcrum" / "rec-1"
    (record / "linked").symlink_to(outside, target_is_directory=True)
    write(record / "@eaDir" / "thumb.jpg")
    write(inbox / ".Trash-1000" / "files" / "x.pdf")
    write(record / "x.tmp")
    poller.poll()
    # The symlink is an entry like a file: the settle thread refuses it. Nothing behind it is read.
    assert nominated.take() == {str(record / "linked")}
    assert poller.folder_count() == 5


def missed_until_a_relist(poller: FolderPoller, nominated: Nominated, record: Path) -> None:
    """A same-tick change in a folder the poller trusts: polls miss it, the relist after a rescan does not."""
    quiet = write(record / "quiet.pdf")
    added_in_the_same_tick(poller, record)
    poller.poll()
    assert nominated.take() == set()
    poller.relist_all()  # what every periodic rescan asks of the poller
    poller.poll()
    assert nominated.take() == {quiet}


def test_same_tick_change_is_found_while_the_folder_is_racy(inbox: Path) -> None:
    record = inbox / "fulcrum" / "rec-1"
    clock = {"offset": 0}
    poller, nominated = primed(inbox, wall_ns=lambda: time.time_ns() + clock["offset"])
    # Primed just after the folders were made: their timestamps are too recent to trust.
    late = write(record / "late.pdf")
    added_in_the_same_tick(poller, record)
    poller.poll()
    assert nominated.take() == {late}

    # Listed again an hour "later": the timestamps are now safely older than the listing, so the
    # folder is trusted from then on.
    clock["offset"] = HOUR_NS
    poller.poll()
    assert nominated.take() == set()
    missed_until_a_relist(poller, nominated, record)


def test_without_the_racy_rule_only_a_rescan_finds_a_same_tick_change(inbox: Path) -> None:
    poller, nominated = primed(inbox, wall_ns=an_hour_later)  # nothing racy
    missed_until_a_relist(poller, nominated, inbox / "fulcrum" / "rec-1")


def test_folder_mtime_set_back_after_adding_a_file(inbox: Path) -> None:
    # rsync -t and touch -d put a folder's mtime back; its ctime moves all the same.
    record = inbox / "fulcrum" / "rec-1"
    before = os.lstat(record)
    poller, nominated = primed(inbox, wall_ns=an_hour_later)
    added = write(record / "synced.pdf")
    os.utime(record, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.lstat(record).st_mtime_ns == before.st_mtime_ns
    poller.poll()
    assert nominated.take() == {added}


def test_inbox_removed_and_created_again(inbox: Path) -> None:
    poller, nominated = primed(inbox)
    shutil.rmtree(inbox)
    poller.poll()
    assert nominated.take() == {str(inbox / "fulcrum" / "rec-1" / "old.pdf")}
    poller.poll()
    assert nominated.take() == set()
    back = write(inbox / "fulcrum" / "rec-9" / "back.pdf")
    poller.poll()
    assert nominated.take() == {back}


def test_stop_ends_the_poll_thread_promptly(inbox: Path) -> None:
    stop = threading.Event()
    poller = FolderPoller(str(inbox), ignore=DEFAULT_IGNORE, nominate=Nominated(), stop=stop)
    poller.prime()
    thread = threading.Thread(target=poller.run, args=(3600.0,), daemon=True)
    thread.start()
    stop.set()
    thread.join(timeout=10)  # a generous bound, not a timing claim: the next poll is an hour away
    assert not thread.is_alive()
