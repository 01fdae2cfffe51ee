"""Outcome moves and sidecars, on real files in tmp_path (and /dev/shm for a second filesystem)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotfolder import outcomes
from hotfolder.outcomes import finish_interrupted_move, free_name, move_file, write_sidecar


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _temps(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(outcomes.TEMP_SUFFIX))


@pytest.fixture
def inbox_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "inbox" / "fulcrum" / "rec-1" / "photo.jpg", os.urandom(70_000))


@pytest.fixture
def other_fs_dir(tmp_path: Path) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm is missing or on the same filesystem as tmp_path: no cross-device move")
    directory = Path(tempfile.mkdtemp(prefix="hotfolder-test-", dir=shm))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# -- free_name ----------------------------------------------------------------------------------


def test_free_name_counts_up_and_keeps_last_suffix(tmp_path: Path) -> None:
    assert free_name(tmp_path, "photo.jpg") == tmp_path / "photo.jpg"
    _write(tmp_path / "photo.jpg", b"1")
    assert free_name(tmp_path, "photo.jpg") == tmp_path / "photo (2).jpg"
    _write(tmp_path / "photo (2).jpg", b"2")
    assert free_name(tmp_path, "photo.jpg") == tmp_path / "photo (3).jpg"
    _write(tmp_path / "a.tar.gz", b"3")
    assert free_name(tmp_path, "a.tar.gz") == tmp_path / "a.tar (2).gz"
    _write(tmp_path / "README", b"4")
    assert free_name(tmp_path, "README") == tmp_path / "README (2)"
    _write(tmp_path / ".profile", b"5")
    assert free_name(tmp_path, ".profile") == tmp_path / ".profile (2)"


def test_free_name_treats_dangling_symlink_as_taken(tmp_path: Path) -> None:
    (tmp_path / "x.pdf").symlink_to(tmp_path / "nowhere")
    assert free_name(tmp_path, "x.pdf") == tmp_path / "x (2).pdf"


# -- move_file ----------------------------------------------------------------------------------


def test_move_keeps_bytes_and_creates_folders(tmp_path: Path, inbox_file: Path) -> None:
    data = inbox_file.read_bytes()
    mtime = inbox_file.stat().st_mtime_ns
    dest = tmp_path / "done" / "fulcrum" / "rec-1" / "photo.jpg"
    final = move_file(inbox_file, dest)
    assert final == dest
    assert final.read_bytes() == data
    assert final.stat().st_mtime_ns == mtime
    assert not inbox_file.exists()


def test_taken_names_get_numbered(tmp_path: Path) -> None:
    dest_dir = tmp_path / "done"
    first = _write(dest_dir / "photo.jpg", b"first")
    moved = []
    for content in (b"second", b"third"):
        src = _write(tmp_path / "inbox" / "photo.jpg", content)
        moved.append(move_file(src, dest_dir / "photo.jpg"))
    assert moved == [dest_dir / "photo (2).jpg", dest_dir / "photo (3).jpg"]
    assert first.read_bytes() == b"first"
    assert [p.read_bytes() for p in moved] == [b"second", b"third"]


def test_never_overwrites_a_name_that_appears_after_planning(tmp_path: Path, inbox_file: Path) -> None:
    data = inbox_file.read_bytes()
    planned = free_name(tmp_path / "done", "photo.jpg")
    _write(planned, b"someone else got here first")
    final = move_file(inbox_file, planned)
    assert final == tmp_path / "done" / "photo (2).jpg"
    assert planned.read_bytes() == b"someone else got here first"
    assert final.read_bytes() == data
    assert not inbox_file.exists()


def test_symlink_source_is_refused(tmp_path: Path, inbox_file: Path) -> None:
    link = inbox_file.parent / "link.jpg"
    link.symlink_to(inbox_file)
    with pytest.raises(OSError) as caught:
        move_file(link, tmp_path / "done" / "link.jpg")
    assert caught.value.errno == errno.ELOOP
    assert link.is_symlink() and inbox_file.exists()
    assert not (tmp_path / "done" / "link.jpg").exists()


def test_unusable_destination_raises_and_keeps_source(tmp_path: Path, inbox_file: Path) -> None:
    # Tests run as root, where chmod does not stop writes: a regular file where a folder
    # should be does.
    blocker = _write(tmp_path / "done", b"not a folder")
    with pytest.raises(OSError):
        move_file(inbox_file, blocker / "fulcrum" / "photo.jpg")
    assert inbox_file.exists()


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        move_file(tmp_path / "gone.jpg", tmp_path / "done" / "gone.jpg")


def test_without_hard_links_falls_back_to_rename_without_overwriting(
    tmp_path: Path, inbox_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a filesystem without hard links (some SMB/FUSE mounts).
    def no_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    data = inbox_file.read_bytes()
    taken = _write(tmp_path / "done" / "photo.jpg", b"taken")
    final = move_file(inbox_file, taken)
    assert final == tmp_path / "done" / "photo (2).jpg"
    assert final.read_bytes() == data
    assert taken.read_bytes() == b"taken"
    assert not inbox_file.exists()


def test_rename_fallback_when_kernel_lacks_noreplace(
    tmp_path: Path, inbox_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(outcomes, "_renameat2", None)
    _write(tmp_path / "done" / "photo.jpg", b"taken")
    final = move_file(inbox_file, tmp_path / "done" / "photo.jpg")
    assert final.name == "photo (2).jpg"
    assert (tmp_path / "done" / "photo.jpg").read_bytes() == b"taken"


# -- across filesystems -------------------------------------------------------------------------


def test_cross_filesystem_move_keeps_bytes_and_leaves_no_temp(inbox_file: Path, other_fs_dir: Path) -> None:
    data = inbox_file.read_bytes()
    mode = inbox_file.stat().st_mode
    _write(other_fs_dir / "done" / "photo.jpg", b"already here")
    final = move_file(inbox_file, other_fs_dir / "done" / "photo.jpg")
    assert final == other_fs_dir / "done" / "photo (2).jpg"
    assert final.read_bytes() == data
    assert final.stat().st_mode == mode
    assert (other_fs_dir / "done" / "photo.jpg").read_bytes() == b"already here"
    assert not inbox_file.exists()
    assert _temps(final.parent) == []


def test_cross_filesystem_failure_mid_copy_keeps_source_and_removes_temp(
    inbox_file: Path, other_fs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_copy(reader: object, writer: object, *, hashing: bool) -> None:
        writer.write(b"half")  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outcomes, "_copy_hashing", failing_copy)
    data = inbox_file.read_bytes()
    with pytest.raises(OSError):
        move_file(inbox_file, other_fs_dir / "done" / "photo.jpg")
    assert inbox_file.read_bytes() == data
    assert os.listdir(other_fs_dir / "done") == []


# -- finish_interrupted_move --------------------------------------------------------------------


def test_finish_when_only_dest_exists(tmp_path: Path) -> None:
    dest = _write(tmp_path / "done" / "a.jpg", b"abc")
    assert finish_interrupted_move(tmp_path / "inbox" / "a.jpg", dest, 3) is True
    assert dest.read_bytes() == b"abc"


def test_finish_when_both_exist_as_one_inode_unlinks_source(tmp_path: Path) -> None:
    src = _write(tmp_path / "inbox" / "a.jpg", b"abc")
    dest = tmp_path / "done" / "a.jpg"
    dest.parent.mkdir()
    os.link(src, dest)  # the crash came between link and unlink
    assert finish_interrupted_move(src, dest, 3) is True
    assert not src.exists() and dest.read_bytes() == b"abc"


def test_finish_when_both_exist_as_completed_copy_unlinks_source(tmp_path: Path) -> None:
    src = _write(tmp_path / "inbox" / "a.jpg", b"abc")
    dest = _write(tmp_path / "done" / "a.jpg", b"abc")  # a cross-device copy that finished
    leftover = _write(tmp_path / "done" / ".a.jpg.0badcafe.hotfolder-part", b"ab")
    assert finish_interrupted_move(src, dest, 3) is True
    assert not src.exists() and dest.read_bytes() == b"abc"
    assert not leftover.exists()


def test_finish_when_dest_is_a_stranger_keeps_source(tmp_path: Path) -> None:
    src = _write(tmp_path / "inbox" / "a.jpg", b"abc")
    dest = _write(tmp_path / "done" / "a.jpg", b"xyz")  # same size, other bytes
    assert finish_interrupted_move(src, dest, 3) is False
    assert src.read_bytes() == b"abc" and dest.read_bytes() == b"xyz"


def test_finish_when_only_source_exists_removes_temp(tmp_path: Path) -> None:
    src = _write(tmp_path / "inbox" / "a.jpg", b"abc")
    leftover = _write(tmp_path / "done" / ".a.jpg.1234abcd.hotfolder-part", b"a")
    unrelated = _write(tmp_path / "done" / ".b.jpg.1234abcd.hotfolder-part", b"b")
    dest = tmp_path / "done" / "a.jpg"
    assert finish_interrupted_move(src, dest, 3) is False
    assert src.exists() and not leftover.exists() and unrelated.exists()
    assert move_file(src, dest) == dest


def test_finish_when_neither_exists(tmp_path: Path) -> None:
    assert finish_interrupted_move(tmp_path / "inbox" / "a.jpg", tmp_path / "done" / "a.jpg", 3) is False


# -- write_sidecar ------------------------------------------------------------------------------


def test_sidecar_round_trips_pretty_and_leaves_no_temp(tmp_path: Path) -> None:
    failed = _write(tmp_path / "failed" / "fulcrum" / "rec-1" / "photo.jpg", b"x")
    info = {"job_id": 7, "reason": "Datei zu groß", "step": "upload", "attempts": 3}
    path = write_sidecar(failed, info)
    assert path == failed.parent / "photo.jpg.error.json"
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == info
    assert text == json.dumps(info, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert "groß" in text
    assert _temps(failed.parent) == []
    assert sorted(os.listdir(failed.parent)) == ["photo.jpg", "photo.jpg.error.json"]


def test_sidecar_replaces_its_own_but_not_a_strangers(tmp_path: Path) -> None:
    failed = _write(tmp_path / "failed" / "photo.jpg", b"x")
    first = write_sidecar(failed, {"job_id": 7, "attempts": 1})
    again = write_sidecar(failed, {"job_id": 7, "attempts": 2})
    assert again == first and json.loads(first.read_text())["attempts"] == 2

    other = write_sidecar(failed, {"job_id": 8, "attempts": 1})
    assert other == failed.parent / "photo.jpg.error (2).json"
    assert json.loads(first.read_text())["job_id"] == 7
    assert json.loads(other.read_text())["job_id"] == 8
    assert _temps(failed.parent) == []


def test_sidecar_never_replaces_a_hand_written_file(tmp_path: Path) -> None:
    failed = _write(tmp_path / "failed" / "photo.jpg", b"x")
    notes = _write(failed.parent / "photo.jpg.error.json", b"my notes, not json")
    path = write_sidecar(failed, {"job_id": 1})
    assert path != notes and notes.read_bytes() == b"my notes, not json"


def test_fsync_dir_accepts_a_folder(tmp_path: Path) -> None:
    outcomes.fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        outcomes.fsync_dir(_write(tmp_path / "f", b""))


def test_cross_filesystem_move_refuses_a_copy_whose_bytes_are_not_the_ones_sent(
    inbox_file: Path, other_fs_dir: Path
) -> None:
    """Off a network mount into a local done/: the original goes only once its copy is proven."""
    data = inbox_file.read_bytes()
    sent = hashlib.sha256(data + b"-the earlier version").hexdigest()
    with pytest.raises(outcomes.CopyDiffers):
        move_file(inbox_file, other_fs_dir / "done" / "photo.jpg", sha256=sent)
    assert inbox_file.read_bytes() == data
    assert os.listdir(other_fs_dir / "done") == []
    final = move_file(inbox_file, other_fs_dir / "done" / "photo.jpg", sha256=hashlib.sha256(data).hexdigest())
    assert final.read_bytes() == data and not inbox_file.exists()
