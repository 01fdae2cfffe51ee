"""Is a settled file finished? The tail tests per format, the writer lease against real writer
processes, the examiner that runs them on real files, and the daemon with writers that pause.
The rules that act on the answers (waiting, the incomplete timeout) are tests/test_tracker.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hotfolder.service import Daemon
from hotfolder.watch import status
from hotfolder.watch.examine import Examiner
from hotfolder.watch.formats import Incomplete, check_complete
from hotfolder.watch.tracker import Answers, Waiting
from hotfolder.watch.writers import has_writer, lease_support
from tests import formats, harness
from tests.harness import FIELD, Site, wait_for, write_config

site = harness.site  # the fixture: a simulator with records rec-1 and rec-2, and a site beside it

COMPLETE = {
    "scan.pdf": formats.pdf(os.urandom(3000)),
    "photo.jpg": formats.jpeg(os.urandom(3000)),
    "plan.png": formats.png(os.urandom(3000)),
    "pages.tif": formats.tiff(pages=3),
    "report.docx": formats.docx("x" * 3000),
    "topo.mbtiles": formats.mbtiles(),
}


def _check(tmp_path: Path, name: str, data: bytes) -> Incomplete | None:
    path = tmp_path / name
    path.write_bytes(data)
    return check_complete(path, len(data))


@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_a_whole_file_of_each_format_is_complete(tmp_path: Path, name: str) -> None:
    assert _check(tmp_path, name, COMPLETE[name]) is None


@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_a_truncated_file_of_each_format_is_incomplete(tmp_path: Path, name: str) -> None:
    data = COMPLETE[name]
    cut = len(data) * 2 // 3 if not name.endswith(".tif") else 30  # inside the second IFD
    assert isinstance(_check(tmp_path, name, data[:cut]), Incomplete)


@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_a_presized_file_filled_two_thirds_is_incomplete(tmp_path: Path, name: str) -> None:
    """Explorer and robocopy set the full size first: the unfilled part reads as zeros."""
    data = COMPLETE[name]
    cut = len(data) * 2 // 3 if not name.endswith(".tif") else 26
    verdict = _check(tmp_path, name, data[:cut] + bytes(len(data) - cut))
    assert isinstance(verdict, Incomplete), name


def test_reasons_say_what_is_missing(tmp_path: Path) -> None:
    verdict = _check(tmp_path, "a.pdf", b"%PDF-1.4\n" + os.urandom(2000))
    assert verdict == Incomplete("PDF has no %%EOF: truncated?")
    verdict = _check(tmp_path, "b.pdf", formats.pdf(b"one") + b"1 0 obj <<")  # an update being appended
    assert verdict is not None and "after its last %%EOF" in verdict.reason
    assert _check(tmp_path, "c.pdf", bytes(4096)) == Incomplete("PDF starts with zero bytes: still being filled?")


def test_unknown_types_and_stand_ins_pass(tmp_path: Path) -> None:
    assert _check(tmp_path, "notes.txt", b"field notes\n") is None
    assert _check(tmp_path, "blob.bin", bytes(10_000)) is None  # not a checked format: zeros may be content
    assert _check(tmp_path, "odd.pdf", b"not really a pdf") is None  # the content decides the format


def test_a_pdf_with_trailing_whitespace_and_incremental_updates_is_complete(tmp_path: Path) -> None:
    updated = formats.pdf(b"rev 1") + b"2 0 obj << >> endobj\ntrailer\n<< >>\n%%EOF\r\n\n"
    assert _check(tmp_path, "u.pdf", updated) is None


# --- the writer lease, against other processes ----------------------------------------------------

_HOLD_OPEN = """
import sys, time
f = open(sys.argv[1], sys.argv[2])
f.write(b"%PDF-1.4\\n")
f.flush()
print("open", flush=True)
sys.stdin.readline()
f.close()
"""


def _writer(path: Path, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", _HOLD_OPEN, str(path), mode], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "open\n"
    return process


def _close(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("\n")
    process.stdin.flush()
    assert process.wait(10) == 0


@pytest.mark.parametrize("mode", ["wb", "ab", "r+b"])
def test_a_file_open_for_writing_in_another_process_has_a_writer(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"")
    assert lease_support(tmp_path) is None
    writer = _writer(path, mode)
    try:
        assert has_writer(path)
    finally:
        _close(writer)
    assert not has_writer(path)


def test_a_reader_is_not_a_writer_and_a_writer_opening_after_the_check_is_not_blocked(tmp_path: Path) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"x")
    with open(path, "rb"):
        assert not has_writer(path)
    # The lease was released: a writer opens at once (a held lease would make it wait for the break).
    started = time.monotonic()
    _close(_writer(path, "ab"))
    assert time.monotonic() - started < 5


def test_a_lease_break_never_kills_the_daemon(tmp_path: Path) -> None:
    """Writers opening while the checks run (a break may be signalled) leave this process alive."""
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"x")
    stop = threading.Event()

    def check_forever() -> None:
        while not stop.is_set():
            has_writer(path)

    checker = threading.Thread(target=check_forever)
    checker.start()
    try:
        for _ in range(20):
            _close(_writer(path, "ab"))
    finally:
        stop.set()
        checker.join()


# --- the examiner: the tests on real files -------------------------------------------------------


def test_the_examiner_finds_a_missing_end_and_a_writer_at_work(tmp_path: Path) -> None:
    examiner = Examiner()
    examiner.start(tmp_path, "native")
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n" + os.urandom(100))
    assert examiner.answers(str(path), path.stat().st_size) == Answers(incomplete="PDF has no %%EOF: truncated?")
    writer = _writer(path, "ab")
    try:
        assert examiner.answers(str(path), path.stat().st_size) == Answers(writer_open=True)
    finally:
        _close(writer)
    path.write_bytes(formats.pdf(os.urandom(100)))
    assert examiner.answers(str(path), path.stat().st_size) == Answers()
    path.unlink()
    assert examiner.answers(str(path), 10) is None  # gone: the tracker drops it


def test_through_an_open_the_examiner_reports_the_figures_it_saw(tmp_path: Path) -> None:
    examiner = Examiner(check_writers=False, look_through_open=True)
    examiner.start(tmp_path, "native")
    path = tmp_path / "notes.txt"
    path.write_bytes(b"12345")
    st = path.stat()
    assert examiner.answers(str(path), 5) == Answers(fresh=(5, st.st_mtime_ns))
    assert examiner.answers(str(path), 3) == Answers(fresh=(5, st.st_mtime_ns))  # figures differ: no tests


def test_on_a_polled_inbox_the_writer_check_is_off_and_says_why(tmp_path: Path) -> None:
    examiner = Examiner()
    examiner.start(tmp_path, "polling")
    assert examiner.writer_check_off is not None and "network mount" in examiner.writer_check_off


def test_the_list_of_waiting_files_is_written_with_wall_clock_times(tmp_path: Path) -> None:
    file = tmp_path / "waiting.json"
    before = time.time()
    status.write_waiting(file, [Waiting("/in/t/r/scan.pdf", "PDF has no %%EOF: truncated?", 100.0)], clock_now=160.0)
    written = json.loads(file.read_text())
    (entry,) = written["waiting"]
    assert entry["file"] == "/in/t/r/scan.pdf" and entry["reason"].startswith("PDF has no")
    assert before - 61 <= entry["since"] <= time.time() - 59  # a minute ago, on the wall clock


# --- the daemon with real writers -----------------------------------------------------------------

_PAUSING_WRITER = """
import sys, time, os
path, pause = sys.argv[1], float(sys.argv[2])
data = sys.stdin.buffer.read()
mode = sys.argv[3]
with open(path, "wb") as f:
    if mode == "presize":
        f.truncate(len(data))  # the full size first, then the fill: the size never moves
    quarter = len(data) // 4
    for start in range(0, len(data), quarter):
        f.write(data[start:start + quarter])
        f.flush()
        time.sleep(pause)
"""


@pytest.mark.parametrize("mode", ["pausing", "presize"])
def test_a_writer_pausing_longer_than_settle_gets_its_whole_file_attached(site: Site, mode: str) -> None:
    write_config(site.root, site.sandbox.url, watch={"check_complete": True, "settle": "200ms"})
    daemon = Daemon(site.settings())
    daemon.start()
    try:
        folder = site.inbox / "fulcrum" / "rec-1"
        folder.mkdir(parents=True)
        data = formats.pdf(os.urandom(200_000))
        subprocess.run([sys.executable, "-c", _PAUSING_WRITER, str(folder / "scan.pdf"), "0.8", mode],
                       input=data, check=True)
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "scan.pdf").exists(), what="scan.pdf in done/")
    finally:
        daemon.stop()
    attached = site.sandbox.fulcrum.record("rec-1")["form_values"][FIELD]
    assert len(attached) == 1
    blob = site.sandbox.fulcrum.attachment_bytes(attached[0]["attachment_id"])
    assert hashlib.sha256(blob).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not any(site.failed.rglob("*"))


def test_a_truncated_pdf_goes_to_failed_after_the_incomplete_timeout(site: Site) -> None:
    write_config(site.root, site.sandbox.url, watch={"check_complete": True, "incomplete_timeout": "1s"})
    site.drop("rec-1", "scan.pdf", b"%PDF-1.4\n" + os.urandom(5000))
    assert Daemon(site.settings()).run_once() == 1
    failed = site.failed / "fulcrum" / "rec-1" / "scan.pdf"
    assert failed.exists()
    sidecar = (failed.parent / "scan.pdf.error.json").read_text()
    assert "PDF has no %%EOF: truncated?" in sidecar
    assert site.sandbox.fulcrum.attachments() == []


def test_a_file_rewritten_after_its_bytes_were_sent_is_sent_again_and_replaces_the_stale_copy(site: Site) -> None:
    """The vendor holds the earlier bytes when the file is rewritten during the link: the new bytes
    are sent, the record's field ends with them only, and a note beside the file names the stale copy."""
    write_config(site.root, site.sandbox.url, watch={"check_complete": True})
    first = formats.pdf(b"first version " + os.urandom(2000))
    path = site.drop("rec-1", "scan.pdf", first)
    # Held at the vendor's record read (the link step), the file is rewritten meanwhile.
    site.sandbox.add_fault("GET", r"^/api/v2/records/rec-1", count=1, action="delay", delay=2.0)
    daemon = Daemon(site.settings())
    daemon.start()
    try:
        wait_for(lambda: any(a["uploaded"] for a in site.sandbox.fulcrum.attachments()), what="upload")
        second = formats.pdf(b"second version " + os.urandom(2000))
        path.write_bytes(second)
        done = site.done / "fulcrum" / "rec-1" / "scan.pdf"
        wait_for(lambda: done.exists() and site.jobs()[0].state.value == "done", what="scan.pdf in done/")
    finally:
        daemon.stop()
    assert done.read_bytes() == second and not (site.failed / "fulcrum").exists()
    attached = site.sandbox.fulcrum.record("rec-1")["form_values"][FIELD]
    assert [site.sandbox.fulcrum.attachment_bytes(a["attachment_id"]) for a in attached] == [second]
    note = json.loads((done.parent / "scan.pdf.resent.json").read_text())
    stale_id = note["stale"][0]["attachment_id"]
    assert site.sandbox.fulcrum.attachment_bytes(stale_id) == first
    assert note["ids"]["replaced"] == [stale_id] and "replaced the earlier copy" in note["note"]


def test_a_file_whose_times_change_after_it_was_sent_is_not_sent_again(site: Site) -> None:
    """Touched, not rewritten (a backup tool, an indexer): the bytes at the vendor are the file's, so
    it goes to done/ with its one attachment and no note."""
    write_config(site.root, site.sandbox.url, watch={"check_complete": True})
    body = formats.pdf(os.urandom(2000))
    path = site.drop("rec-1", "scan.pdf", body)
    site.sandbox.add_fault("GET", r"^/api/v2/records/rec-1", count=1, action="delay", delay=2.0)
    daemon = Daemon(site.settings())
    daemon.start()
    try:
        wait_for(lambda: any(a["uploaded"] for a in site.sandbox.fulcrum.attachments()), what="upload")
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
        done = site.done / "fulcrum" / "rec-1" / "scan.pdf"
        wait_for(lambda: done.exists() and site.jobs()[0].state.value == "done", what="scan.pdf in done/")
    finally:
        daemon.stop()
    assert len(site.sandbox.fulcrum.attachments()) == 1
    attached = site.sandbox.fulcrum.record("rec-1")["form_values"][FIELD]
    assert [site.sandbox.fulcrum.attachment_bytes(a["attachment_id"]) for a in attached] == [body]
    assert not (done.parent / "scan.pdf.resent.json").exists()


def test_status_lists_a_file_held_open_by_a_writer_with_the_reason(site: Site) -> None:
    write_config(site.root, site.sandbox.url, watch={"check_complete": True})
    folder = site.inbox / "fulcrum" / "rec-1"
    folder.mkdir(parents=True)
    daemon = Daemon(site.settings())
    daemon.start()
    try:
        writer = _writer(folder / "scan.pdf", "wb")
        try:
            def status() -> str:
                return subprocess.run(
                    [sys.executable, "-m", "hotfolder", "status", "-c", str(site.config_path)], capture_output=True,
                    text=True, env=harness.env_for_daemon(), cwd=harness.ROOT, check=True,
                ).stdout

            shown = wait_for(lambda: (out := status()) and "open by a writer" in out and out, what="status line")
            assert "files not ready yet" in shown and "scan.pdf" in shown
            assert site.jobs() == []  # not a job until it is finished
        finally:
            _close(writer)
        # Closed after its first line only: now it waits for the rest of the PDF, and says so.
        wait_for(lambda: "PDF has no %%EOF" in status(), what="the reason to change")
        with open(folder / "scan.pdf", "ab") as f:
            f.write(b"1 0 obj << >> endobj\n%%EOF\n")
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "scan.pdf").exists(), what="scan.pdf in done/")
        # The live state (uploads in flight) is rewritten at most twice a second: give it that long.
        wait_for(lambda: "scan.pdf" not in status(), timeout=5, what="scan.pdf gone from status")
    finally:
        daemon.stop()


def test_a_probe_file_left_by_a_killed_daemon_is_removed_at_the_next_start(tmp_path: Path) -> None:
    """The writer test's probe lives for milliseconds; a daemon killed in between leaves it in the inbox (a
    multi-node campaign found one). The next probe of that folder, by any daemon, removes it by its age;
    another daemon's probe under way (fresh) is left alone."""
    left = tmp_path / ".hotfolder-lease-probe-otherhost-4242"
    left.write_bytes(b"")
    os.utime(left, (time.time() - 3600, time.time() - 3600))
    under_way = tmp_path / ".hotfolder-lease-probe-otherhost-4343"
    under_way.write_bytes(b"")
    assert lease_support(tmp_path) is None
    assert not left.exists() and under_way.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [under_way.name]  # our own probe is gone too
