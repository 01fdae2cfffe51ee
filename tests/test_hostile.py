"""Hostile and odd input, end to end: real files, the Fulcrum target against the sandbox.

Each test asserts what a user checks afterwards: where the file ended, the sidecar's reason, what
reached the vendor (request paths, records, attachments, the bytes in its S3). The daemon runs in
this process (``Daemon.start``) wherever a test must act while it runs, and every such test ends by
showing the daemon still alive: its threads are there and a plain file dropped last is delivered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from structlog.testing import capture_logs

from hotfolder import outcomes
from hotfolder.config import load_settings
from hotfolder.errors import StepError
from hotfolder.journal import Job, Journal
from hotfolder.layout import MAX_SEGMENT_BYTES, LayoutError, place, validate_record_id
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.service import Daemon
from hotfolder.transfer import FileIdentity, hash_file
from hotfolder.vendors import adapter_class
from hotfolder.vendors.base import StepContext
from tests.harness import TOKEN, Site, run_once_in_process, site, wait_for, write_config

__all__ = ["site"]  # the fixture, used by name

NOBODY = 65534


# -- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(site: Site) -> Iterator[Daemon]:
    daemon = Daemon(site.settings())
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _drop_long(site: Site, record: str, name: str, data: bytes) -> Path:
    """site.drop for a name too long for its ".<name>.partial" temp: a short hidden temp instead."""
    folder = site.inbox / "fulcrum" / record
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".drop-{time.monotonic_ns()}.partial"  # dot-files are ignored: the rename arrives
    temp.write_bytes(data)
    os.replace(temp, folder / name)
    return folder / name


def _done(record: str, name: str, site: Site) -> Path:
    return site.done / "fulcrum" / record / name


def _sidecar(moved: Path) -> dict[str, Any]:
    return dict(json.loads(moved.with_name(moved.name + ".error.json").read_text()))


def _attached(site: Site, record: str) -> dict[str, bytes]:
    """name → the bytes the vendor holds, for every attachment linked to ``record``."""
    return {
        item["name"]: site.sandbox.fulcrum.attachment_bytes(item["attachment_id"])
        for item in site.attachments_on(record)
    }


def _vendor_holds(site: Site, data: bytes) -> bool:
    """Did these bytes reach the vendor's S3 at all (linked or not)?"""
    md5 = hashlib.md5(data).hexdigest()
    return any(blob.md5 == md5 and blob.size == len(data) for blob in site.sandbox.s3.store.all())


def _job(daemon: Daemon, relpath: str) -> Job | None:
    found = [job for job in daemon.journal.jobs(limit=10_000) if job.relpath == relpath]
    return found[-1] if found else None


def _fault_taken(site: Site) -> bool:
    # A fault is taken the moment its request arrives, before its delay: the request is in flight.
    return not site.sandbox.faults.pending()


def _assert_still_running(daemon: Daemon, site: Site, record: str = "rec-2") -> None:
    """The daemon kept running through whatever came before: a plain file dropped now is delivered."""
    names = {thread.name for thread in threading.enumerate()}
    assert {"hotfolder-settle", "hotfolder-rescan"} <= names
    assert any(name.startswith("worker-") for name in names)
    data = os.urandom(3000)  # fresh bytes: never a duplicate of anything earlier
    name = f"plain-{time.monotonic_ns()}.pdf"
    site.drop(record, name, data)
    wait_for(lambda: _done(record, name, site).exists(), what=f"{name} in done/")
    assert _attached(site, record)[name] == data


def _refusals(logs: list[dict[str, Any]]) -> dict[str, str]:
    """file → reason of every "not a regular file, left alone" line."""
    return {e["file"]: e["reason"] for e in logs if e["event"] == "not a regular file, left alone"}


def _bind_socket(path: Path) -> socket.socket:
    """A UNIX socket at ``path``; bound in a short folder and moved, since sun_path holds ~107 bytes."""
    short = Path(tempfile.mkdtemp(prefix="hf-"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(short / "s"))
        os.rename(short / "s", path)
    except BaseException:
        sock.close()
        raise
    finally:
        shutil.rmtree(short, ignore_errors=True)
    return sock


def _make_device(path: Path) -> bool:
    """A character device like /dev/zero (reading it never ends); False where mknod is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
    except PermissionError:
        return False
    return True


def _as_nobody(work: Callable[[], int], timeout: float = 60.0) -> int:
    """Run ``work`` in a forked child that dropped root for ``nobody``; its return is the exit code.

    Forked, not exec'd: the interpreter lives under /root, which nobody may not enter. As another
    user already (not root), the work runs here: chmod 000 locks that user out just the same.
    """
    if os.geteuid() != 0:
        return work()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            code = work()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the unprivileged child did not finish")
        time.sleep(0.05)


# -- record ids that cannot be folders ---------------------------------------------------------------

IMPOSSIBLE_RECORDS = ["..", ".", "/etc", "/", "../rec-2", "rec-1/../rec-2", "nul\x00byte"]


@pytest.mark.parametrize("record", IMPOSSIBLE_RECORDS)
def test_record_ids_that_cannot_be_folders_are_refused_by_the_layout(site: Site, record: str) -> None:
    with pytest.raises(LayoutError):
        validate_record_id(record)
    inbox = site.inbox
    # As a path below the inbox: ".." is refused as such, "/etc" leaves the inbox, "." vanishes
    # and leaves a file with no record level; none of them is placed.
    with pytest.raises(LayoutError):
        place(inbox, inbox / "fulcrum" / record / "a.pdf", site.settings().targets)


def test_a_journal_row_with_an_impossible_record_id_never_reaches_a_url(site: Site) -> None:
    """A row that never went through layout.place (hand-edited, or from an older version).

    Percent-encoding alone would not be enough: "." and ".." stay as they are under quote(), and
    HTTP clients remove dot segments ("/records/.." becomes "/"), so the runner checks again.
    """
    journal = Journal(site.journal_path)
    try:
        for number, record in enumerate(IMPOSSIBLE_RECORDS):
            site.sandbox.fulcrum.add_record(record)  # so that only the daemon's own check can stop it
            path = site.drop(f"hand-{number}", f"f{number}.pdf", f"hand-built {number}".encode())
            info = path.stat()
            journal.add_job(
                target="fulcrum", record=record, group=None, name=path.name,
                relpath=path.relative_to(site.inbox).as_posix(), size=info.st_size, mtime_ns=info.st_mtime_ns,
            )
    finally:
        journal.close()

    assert run_once_in_process(site) == 1
    assert site.sandbox.requests() == []  # not one vendor call for any of them
    assert site.attachments_on("rec-2") == []
    for number in range(len(IMPOSSIBLE_RECORDS)):
        moved = site.failed / "fulcrum" / f"hand-{number}" / f"f{number}.pdf"
        assert moved.read_bytes() == f"hand-built {number}".encode()
        assert "record id" in _sidecar(moved)["reason"]


def test_the_adapter_alone_also_keeps_a_hostile_record_id_in_one_segment(site: Site, tmp_path: Path) -> None:
    """Below the runner's check, the Fulcrum adapter percent-encodes on its own (defence in depth)."""
    target = site.settings().targets["fulcrum"]
    hostile = ["../rec-2", "rec-1/../rec-2", "/rec-2", "nul\x00byte", "..", "."]
    with httpx.Client(base_url=target.url) as client:
        adapter = adapter_class(target)(target, client)
        for record in hostile:
            ctx = StepContext(
                job_id=1, target="fulcrum", record=record, group=None, name="a.pdf", path=tmp_path / "a.pdf",
                identity=FileIdentity(1, 0), digests=None, ids={"attachment_id": "att-1"},
            )
            with contextlib.suppress(StepError):  # unknown record: refused, which is fine
                adapter.link(ctx)
    paths = [r["path"] for r in site.sandbox.requests()]
    assert paths == [f"/api/v2/records/{quote(record, safe='')}.json" for record in hostile]
    assert not any("/../" in path or "/./" in path for path in paths)
    assert site.attachments_on("rec-2") == []


# -- record ids that are odd but real ------------------------------------------------------------------

PERCENT_RECORDS = ["rec%2F..%2Fx", "a%20b", "%2e%2e", "what?", "hash#1", "50%"]


def test_percent_encodings_and_url_characters_in_record_ids_stay_one_literal_segment(site: Site) -> None:
    for number, record in enumerate(PERCENT_RECORDS):
        site.sandbox.fulcrum.add_record(record)
        site.drop(record, f"p{number}.pdf", f"for {record}".encode())
    assert run_once_in_process(site) == 0

    record_paths = {r["path"] for r in site.sandbox.requests() if r["path"].startswith("/api/v2/records/")}
    for number, record in enumerate(PERCENT_RECORDS):
        # Encoded once more on the wire, so the vendor decodes back exactly the folder's name.
        assert f"/api/v2/records/{quote(record, safe='')}.json" in record_paths
        assert _attached(site, record) == {f"p{number}.pdf": f"for {record}".encode()}
        assert _done(record, f"p{number}.pdf", site).exists()
    assert all(path.count("/") == 4 for path in record_paths)  # /api/v2/records/<one segment>.json
    assert site.attachments_on("rec-1") == site.attachments_on("rec-2") == []


# -- Unicode and long names -----------------------------------------------------------------------------

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
LONG_NAME = "ü" * 125 + "x.pdf"  # 255 bytes of UTF-8: the longest name a Linux folder holds


def test_nfc_and_nfd_records_and_names_stay_distinct_and_byte_exact(site: Site) -> None:
    assert NFC != NFD
    site.sandbox.strict_meta = True  # the file name travels in a signed header too: it must arrive intact
    for record in (NFC, NFD):
        site.sandbox.fulcrum.add_record(record)
    files = {(NFC, f"{NFC}.pdf"): b"nfc in nfc", (NFC, f"{NFD}.pdf"): b"nfd in nfc", (NFD, f"{NFC}.pdf"): b"nfc in nfd"}
    for (record, name), data in files.items():
        site.drop(record, name, data)
    assert run_once_in_process(site) == 0

    assert _attached(site, NFC) == {f"{NFC}.pdf": b"nfc in nfc", f"{NFD}.pdf": b"nfd in nfc"}
    assert _attached(site, NFD) == {f"{NFC}.pdf": b"nfc in nfd"}
    for item in site.attachments_on(NFC):
        blob = site.sandbox.fulcrum.attachment_blob(item["attachment_id"])
        assert blob is not None and blob.metadata["x-amz-meta-filename"] == item["name"]
    for record in (NFC, NFD):
        folder = os.fsencode(site.done / "fulcrum" / record)
        expected = {os.fsencode(name): data for (rec, name), data in files.items() if rec == record}
        assert set(os.listdir(folder)) == set(expected)  # no name was normalised on the way
        for raw, data in expected.items():
            with open(os.path.join(folder, raw), "rb") as handle:
                assert handle.read() == data


def test_a_255_byte_name_is_kept_and_its_numbered_twin_still_fits(site: Site) -> None:
    assert len(LONG_NAME.encode()) == MAX_SEGMENT_BYTES
    taken = _done("rec-1", LONG_NAME, site)
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"already there, not ours")
    _drop_long(site, "rec-1", LONG_NAME, b"long name, first")
    _drop_long(site, "no-such-record", LONG_NAME, b"long name, refused by the vendor")
    assert run_once_in_process(site) == 1

    assert _attached(site, "rec-1") == {LONG_NAME: b"long name, first"}
    assert taken.read_bytes() == b"already there, not ours"
    names = os.listdir(taken.parent)
    assert all(len(os.fsencode(name)) <= MAX_SEGMENT_BYTES for name in names)
    (twin,) = (name for name in names if name != LONG_NAME)
    assert twin.endswith(" (2).pdf") and twin.startswith("ü" * 100)
    assert (taken.parent / twin).read_bytes() == b"long name, first"
    # In failed/ the sidecar's name must fit as well: the file's name, shortened, + ".error.json".
    failed = site.failed / "fulcrum" / "no-such-record"
    assert (failed / LONG_NAME).read_bytes() == b"long name, refused by the vendor"
    (sidecar,) = (name for name in os.listdir(failed) if name.endswith(".error.json"))
    assert len(os.fsencode(sidecar)) <= MAX_SEGMENT_BYTES
    assert json.loads((failed / sidecar).read_text())["file"] == LONG_NAME


def test_free_name_never_plans_a_name_longer_than_the_file_system_takes(tmp_path: Path) -> None:
    for name in (LONG_NAME, "é" * 127 + "x", "a." + "b" * 252):
        (tmp_path / name).write_bytes(b"taken")
        planned = outcomes.free_name(tmp_path, name)
        assert len(os.fsencode(planned.name)) <= MAX_SEGMENT_BYTES
        assert "(2)" in planned.name and planned.name.isprintable()  # cut between characters, not bytes
        planned.write_bytes(b"the twin")  # the file system agrees it fits


# -- things that are not regular files -------------------------------------------------------------------


def test_symlinks_to_a_file_and_to_a_folder_outside_are_never_followed(site: Site, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    secret, inner = outside / "secret.pdf", outside / "folder" / "inner.pdf"
    secret.write_bytes(b"outside the inbox: /etc/shadow stand-in")
    inner.write_bytes(b"inside a folder outside the inbox")
    site.sandbox.fulcrum.add_record("rec-link")  # the vendor would take it: only the daemon can refuse
    file_link = site.inbox / "fulcrum" / "rec-1" / "link.pdf"
    file_link.parent.mkdir(parents=True)
    file_link.symlink_to(secret)  # there before the start: found by the first rescan
    folder_link = site.inbox / "fulcrum" / "rec-link"

    with capture_logs() as logs, running(site) as daemon:
        folder_link.symlink_to(outside / "folder", target_is_directory=True)  # arrives while running
        wait_for(lambda: len(_refusals(logs)) == 2, what="both symlinks logged")
        _assert_still_running(daemon, site, "rec-1")

    assert _refusals(logs) == {str(file_link): "symlink: not followed", str(folder_link): "symlink: not followed"}
    assert file_link.is_symlink() and folder_link.is_symlink()  # left alone
    assert secret.read_bytes().startswith(b"outside") and inner.exists()
    assert not _vendor_holds(site, secret.read_bytes()) and not _vendor_holds(site, inner.read_bytes())
    assert site.attachments_on("rec-link") == []
    assert all(job.name not in ("link.pdf", "inner.pdf") for job in site.jobs())


def test_fifo_socket_and_device_are_never_opened(site: Site) -> None:
    folder = site.inbox / "fulcrum" / "rec-1"
    folder.mkdir(parents=True)
    with capture_logs() as logs, running(site) as daemon:
        os.mkfifo(folder / "pipe.pdf")  # opening it to read would block until a writer came
        sock = _bind_socket(folder / "sock.pdf")
        expected = {str(folder / "pipe.pdf"): "FIFO: not a regular file",
                    str(folder / "sock.pdf"): "socket: not a regular file"}
        if _make_device(folder / "zero.pdf"):
            expected[str(folder / "zero.pdf")] = "character device: not a regular file"
        try:
            wait_for(lambda: _refusals(logs) == expected, what="every special file logged")
            _assert_still_running(daemon, site, "rec-1")
        finally:
            sock.close()
    kinds = {stat.S_IFMT(os.lstat(path).st_mode) for path in expected}
    assert len(kinds) == len(expected)  # each one still there, still what it was
    (only,) = site.jobs()
    assert only.name.startswith("plain-")  # the one job: the plain file dropped last


# -- files that are not finished, or change under us --------------------------------------------------


def test_a_zero_byte_file_waits_until_its_content_arrives(site: Site) -> None:
    path = site.inbox / "fulcrum" / "rec-1" / "empty-first.pdf"
    path.parent.mkdir(parents=True)
    with running(site) as daemon:
        path.touch()
        time.sleep(4 * site.settings().watch.settle)  # several settle periods: it would have gone
        assert path.exists() and _job(daemon, "fulcrum/rec-1/empty-first.pdf") is None
        path.write_bytes(b"the scanner filled it in later")
        wait_for(lambda: _done("rec-1", path.name, site).exists(), what="done")
        _assert_still_running(daemon, site)
    assert _attached(site, "rec-1") == {"empty-first.pdf": b"the scanner filled it in later"}


@pytest.mark.parametrize("how", ["rewritten", "replaced"])
def test_a_file_changed_between_hash_and_upload_is_hashed_again(site: Site, how: str) -> None:
    old = os.urandom(40_000)
    new = os.urandom(40_000) if how == "replaced" else os.urandom(55_000)  # equal size: mtime tells
    site.sandbox.add_fault("POST", r"^/api/v2/attachments$", action="delay", delay=1.0)
    with running(site) as daemon:
        path = site.drop("rec-1", "moving.pdf", old)
        wait_for(lambda: _fault_taken(site), what="presign in flight")  # so the hash is done
        if how == "rewritten":
            path.write_bytes(new)
        else:
            site.drop("rec-1", "moving.pdf", new)  # another file renamed over it
        # The job, not the file in done/: the file moves first, then the job is closed.
        wait_for(lambda: (job := _job(daemon, "fulcrum/rec-1/moving.pdf")) and job.state is State.DONE,
                 what="job done")
        jobs = [job for job in daemon.journal.jobs(limit=100) if job.name == "moving.pdf"]
        assert len(jobs) == 1  # the same job went back to hash; no second job was made
        assert jobs[0].attempts == 0  # a file still being written is waited for: no attempt is spent
        job = jobs[0]
        assert job.digests and job.digests["sha256"] == hashlib.sha256(new).hexdigest()
        _assert_still_running(daemon, site)
    assert _done("rec-1", "moving.pdf", site).read_bytes() == new
    assert _attached(site, "rec-1") == {"moving.pdf": new}
    assert not _vendor_holds(site, old)  # the stale bytes never went out


def test_a_file_deleted_mid_upload_closes_its_job_as_gone(site: Site) -> None:
    site.sandbox.add_fault("PUT", r"^/s3/", action="delay", delay=1.0)
    with capture_logs() as logs, running(site) as daemon:
        path = site.drop("rec-1", "vanishing.pdf", os.urandom(50_000))
        wait_for(lambda: _fault_taken(site), what="upload in flight")
        path.unlink()
        wait_for(lambda: (job := _job(daemon, "fulcrum/rec-1/vanishing.pdf")) and job.state is State.GONE,
                 what="job gone")
        _assert_still_running(daemon, site)
    gone = [e for e in logs if e["event"] == "file vanished from the inbox; job closed"]
    assert [e["file"] for e in gone] == ["vanishing.pdf"]
    assert "gone" in gone[0]["reason"]
    assert site.attachments_on("rec-1") == []  # uploaded to S3 maybe, but linked to nothing
    assert not _done("rec-1", "vanishing.pdf", site).exists()
    assert not any(site.failed.rglob("*"))


# -- files the daemon may not read ------------------------------------------------------------------


def test_hash_file_says_permanent_on_permission_denied() -> None:
    folder = Path(tempfile.mkdtemp(prefix="hf-unreadable-"))  # /tmp itself: nobody may pass through
    try:
        folder.chmod(0o755)
        locked = folder / "locked.pdf"
        locked.write_bytes(b"root only")
        locked.chmod(0o000)

        def check() -> int:
            try:
                hash_file(locked)
            except StepError as error:
                return 0 if error.kind is OutcomeKind.PERMANENT and "permission denied" in str(error) else 2
            return 1

        assert _as_nobody(check) == 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_an_unreadable_file_goes_to_failed_and_the_rest_is_delivered(site: Site) -> None:
    root = Path(tempfile.mkdtemp(prefix="hf-nobody-"))
    try:
        settings = load_settings(write_config(root, site.sandbox.url), environ={"FULCRUM_TOKEN": TOKEN})
        record = root / "inbox" / "fulcrum" / "rec-1"
        record.mkdir(parents=True)
        for folder in ("done", "failed", "state"):
            (root / folder).mkdir()
        (record / "fine.pdf").write_bytes(b"anyone may read this")
        if os.geteuid() == 0:
            for path in (root, *root.rglob("*")):
                os.chown(path, NOBODY, NOBODY)
        locked = record / "locked.pdf"
        locked.write_bytes(b"the daemon's user may not read this")
        locked.chmod(0o000)  # owned by root when we are root: nobody is locked out
        assert _as_nobody(lambda: Daemon(settings).run_once()) == 1

        moved = root / "failed" / "fulcrum" / "rec-1" / "locked.pdf"
        assert moved.exists() and not locked.exists()
        sidecar = _sidecar(moved)
        assert sidecar["step"] == "hash" and "permission denied" in sidecar["reason"]
        assert (root / "done" / "fulcrum" / "rec-1" / "fine.pdf").exists()
        assert _attached(site, "rec-1") == {"fine.pdf": b"anyone may read this"}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- an outcome folder that cannot be written ----------------------------------------------------------


def test_an_unwritable_done_folder_keeps_the_file_and_retries_the_move(site: Site) -> None:
    blocker = site.done / "fulcrum" / "rec-1"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"a file where the record folder should be")
    with capture_logs() as logs, running(site) as daemon:
        path = site.drop("rec-1", "stuck.pdf", b"attached, then stuck at the door")

        def failed_moves() -> list[dict[str, Any]]:
            return [e for e in logs if e["event"] == "step failed" and e.get("step") == "to_done"]

        wait_for(lambda: len(failed_moves()) >= 3, what="the move failing and being retried")
        assert path.read_bytes() == b"attached, then stuck at the door"  # stays put
        assert f"{blocker} exists but is not a folder" in failed_moves()[0]["reason"]
        job = _job(daemon, "fulcrum/rec-1/stuck.pdf")
        assert job is not None and job.state is State.TO_DONE
        blocker.unlink()  # someone clears the way; no restart
        wait_for(lambda: _done("rec-1", "stuck.pdf", site).exists(), what="done after the way is clear")
        _assert_still_running(daemon, site)
    assert not path.exists()
    assert _attached(site, "rec-1") == {"stuck.pdf": b"attached, then stuck at the door"}  # once


# -- all of it in one run ----------------------------------------------------------------------------


def test_the_daemon_keeps_running_through_all_of_it(site: Site, tmp_path: Path) -> None:
    """One daemon, every hostile thing at once, then a plain file: it is delivered like any other."""
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"never to be sent")
    for record in ("a%20b", NFC, NFD, "rec-link"):
        site.sandbox.fulcrum.add_record(record)
    blocker = site.done / "fulcrum" / "a%20b"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"blocks done/ for one record")
    rec1 = site.inbox / "fulcrum" / "rec-1"
    rec1.mkdir(parents=True)
    stale, fresh = os.urandom(20_000), os.urandom(21_000)

    with running(site) as daemon:
        site.sandbox.add_fault("POST", r"^/api/v2/attachments$", action="delay", delay=0.8)
        moving = site.drop("rec-2", "moving.pdf", stale)
        wait_for(lambda: _fault_taken(site), what="presign in flight")
        moving.write_bytes(fresh)
        wait_for(lambda: _done("rec-2", "moving.pdf", site).exists(), what="the changed file delivered")
        site.sandbox.add_fault("PUT", r"^/s3/", action="delay", delay=0.8)
        vanishing = site.drop("rec-1", "vanishing.pdf", os.urandom(20_000))
        wait_for(lambda: _fault_taken(site), what="upload in flight")
        vanishing.unlink()
        (rec1 / "link.pdf").symlink_to(outside)
        (site.inbox / "fulcrum" / "rec-link").symlink_to(tmp_path, target_is_directory=True)
        os.mkfifo(rec1 / "pipe.pdf")
        sock = _bind_socket(rec1 / "sock.pdf")
        _make_device(rec1 / "zero.pdf")
        (rec1 / "empty.pdf").touch()
        (site.inbox / "fulcrum" / "loose.pdf").write_bytes(b"no record level")
        (site.inbox / "scanner-9" / "rec-1").mkdir(parents=True)
        (site.inbox / "scanner-9" / "rec-1" / "x.pdf").write_bytes(b"unknown target")
        site.drop("a%20b", "blocked.pdf", b"percent record, blocked door")
        site.drop(NFC, f"{NFD}.pdf", b"nfd name in nfc record")
        site.drop(NFD, f"{NFC}.pdf", b"nfc name in nfd record")
        _drop_long(site, "rec-2", LONG_NAME, b"long name")
        try:
            wait_for(lambda: _done(NFD, f"{NFC}.pdf", site).exists() and _done("rec-2", LONG_NAME, site).exists(),
                     what="the odd but valid files delivered")
            wait_for(lambda: (site.failed / "scanner-9" / "rec-1" / "x.pdf").exists()
                     and (site.failed / "fulcrum" / "loose.pdf").exists(), what="refusals in failed/")
            (rec1 / "empty.pdf").write_bytes(b"filled at last")
            wait_for(lambda: _done("rec-1", "empty.pdf", site).exists(), what="the filled file delivered")
            blocker.unlink()
            wait_for(lambda: _done("a%20b", "blocked.pdf", site).exists(), what="the blocked move done")
            _assert_still_running(daemon, site)
        finally:
            sock.close()
        wait_for(lambda: (job := _job(daemon, "fulcrum/rec-1/vanishing.pdf")) and job.state is State.GONE,
                 what="the vanished file's job closed as gone")

    assert _attached(site, "rec-1") == {"empty.pdf": b"filled at last"}
    assert _attached(site, "a%20b") == {"blocked.pdf": b"percent record, blocked door"}
    assert _attached(site, NFC) == {f"{NFD}.pdf": b"nfd name in nfc record"}
    assert _attached(site, NFD) == {f"{NFC}.pdf": b"nfc name in nfd record"}
    assert _attached(site, "rec-2")[LONG_NAME] == b"long name"
    assert _attached(site, "rec-2")["moving.pdf"] == fresh and not _vendor_holds(site, stale)
    assert site.attachments_on("rec-link") == [] and not _vendor_holds(site, outside.read_bytes())
    assert all(path.is_symlink() for path in (rec1 / "link.pdf", site.inbox / "fulcrum" / "rec-link"))
    assert stat.S_ISFIFO(os.lstat(rec1 / "pipe.pdf").st_mode)
    assert not any("/../" in r["path"] for r in site.sandbox.requests())
