"""The archive of old finished jobs: what moves, that twins are still found, and that a crash or a
kill in the middle of a move loses nothing and duplicates nothing (daemon/hotfolder/journal/archive.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hotfolder.journal import Journal, NewJob, StepRecord
from hotfolder.journal.archive import archive_path
from hotfolder.journal.archive_thread import ArchiveThread
from hotfolder.pipeline import State
from tests.harness import Site, run_once_in_process, site

__all__ = ["site"]

DAY = 86400.0
REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _finish(journal: Journal, job_id: int, state: State = State.DONE, sha256: str = "aa") -> None:
    journal.record(job_id, StepRecord(state=state, attempts=0, digests={"sha256": sha256, "md5": "11"}, size=10,
                                      vendor_update={"attachment_id": f"att-{job_id}"}))


def _new(count: int, prefix: str = "f") -> list[NewJob]:
    return [NewJob("fulcrum", "rec-1", None, f"{prefix}{n}.jpg", f"fulcrum/rec-1/{prefix}{n}.jpg", 10, 1)
            for n in range(count)]


def _ids_in(path: Path) -> list[int]:
    """Job ids stored in one SQLite file, read the way an admin would with the sqlite3 shell."""
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        # A pass that has just created the file may not have written its schema yet.
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone() is None:
            return []
        return [job_id for (job_id,) in conn.execute("SELECT id FROM jobs ORDER BY id")]
    finally:
        conn.close()


def _filled_finished(path: Path, count: int, *, clock: Clock) -> list[int]:
    journal = Journal(path, clock=clock)
    jobs = journal.add_jobs(_new(count))
    for job in jobs:
        _finish(journal, job.id, sha256=f"sha-{job.id}")
    journal.close()
    return [job.id for job in jobs]


def test_jobs_finished_long_ago_move_and_recent_or_unfinished_ones_stay(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    journal = Journal(tmp_path / "journal.db", clock=clock)
    old_done, old_failed, old_gone, recent_done, unfinished = journal.add_jobs(_new(5))
    _finish(journal, old_done.id)
    _finish(journal, old_failed.id, State.FAILED)
    _finish(journal, old_gone.id, State.GONE)
    clock.now += 40 * DAY
    _finish(journal, recent_done.id)
    before = journal.get(old_done.id)
    clock.now += 1 * DAY

    assert journal.archive_finished(30 * DAY) == 3
    assert {job.id for job in journal.jobs()} == {recent_done.id, unfinished.id}
    assert journal.archived_count() == 3
    assert _ids_in(archive_path(tmp_path / "journal.db")) == [old_done.id, old_failed.id, old_gone.id]
    assert archive_path(tmp_path / "journal.db").name == "journal.archive.db"
    # The archived row reads back as the very same job, every column.
    assert journal.possible_twins("fulcrum", "rec-1", unfinished.id, 10, {"sha256": "aa"}) == [
        before, journal.get(recent_done.id)]
    assert journal.archive_finished(30 * DAY) == 0  # nothing more is old enough


def test_the_journal_file_shrinks_when_its_old_jobs_are_archived(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    clock = Clock(time.time() - 40 * DAY)
    journal = Journal(path, clock=clock)
    for job in journal.add_jobs(_new(3000)):
        journal.record(job.id, StepRecord(state=State.DONE, attempts=0, vendor_update={"note": "x" * 300}))
    journal.close()
    before = path.stat().st_size
    journal = Journal(path)
    assert journal.archive_finished(30 * DAY) == 3000
    journal.close()
    assert path.stat().st_size < before / 5, f"{before} → {path.stat().st_size} bytes"


def test_an_archived_twin_is_found_after_a_restart(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    path = tmp_path / "journal.db"
    journal = Journal(path, clock=clock)
    (first,) = journal.add_jobs(_new(1))
    _finish(journal, first.id, sha256="bytes-of-the-photo")
    clock.now += 31 * DAY
    assert journal.archive_finished(30 * DAY) == 1
    journal.close()

    reopened = Journal(path, clock=clock, daemon=True)
    (again,) = reopened.add_jobs(_new(1, prefix="again-"))
    twins = reopened.possible_twins("fulcrum", "rec-1", again.id, 10, {"sha256": "bytes-of-the-photo"})
    assert [(twin.id, twin.state, twin.vendor["attachment_id"]) for twin in twins] == [
        (first.id, State.DONE, f"att-{first.id}")]
    assert reopened.possible_twins("fulcrum", "rec-1", again.id, 10, {"sha256": "other"}) == []
    assert again.id > first.id  # ids are never handed out twice, though the first row left the journal


def test_a_journal_started_afresh_never_reuses_an_archived_id(tmp_path: Path) -> None:
    """The journal is destroyed (moved aside as damaged) while its archive survives: new jobs must not
    take ids the archive holds, or an archived twin would be mistaken for the new job itself."""
    path = tmp_path / "journal.db"
    ids = _filled_finished(path, 50, clock=Clock(time.time() - 40 * DAY))
    journal = Journal(path)
    journal.archive_finished(30 * DAY)
    journal.close()
    path.write_bytes(b"garbage, not a database" * 400)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    fresh = Journal(path, daemon=True)
    assert fresh.recovered_from is not None
    (again,) = fresh.add_jobs(_new(1, prefix="again-"))
    assert again.id > max(ids)
    twins = fresh.possible_twins("fulcrum", "rec-1", again.id, 10, {"sha256": f"sha-{ids[0]}"})
    assert [twin.id for twin in twins] == [ids[0]]
    _finish(fresh, again.id)
    fresh.archive_finished(0.0)
    fresh.close()
    assert _ids_in(archive_path(path)) == [*ids, again.id]  # nothing archived was overwritten


def _child(path: Path, body: str, **popen: Any) -> subprocess.Popen[bytes]:
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from hotfolder.journal import archive\n"
        "from hotfolder.journal import Journal\n"
        "j = Journal(Path(sys.argv[1]), daemon=True)\n"
        f"{body}"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, **popen)


def test_a_kill_between_archive_commit_and_journal_delete_is_finished_by_the_next_pass(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ids = _filled_finished(path, 300, clock=Clock(time.time() - 40 * DAY))
    # The child dies right after the archive committed the first batch, before the journal's delete.
    child = _child(path, (
        "stored = archive.Archive.store\n"
        "def store_then_die(self, rows):\n"
        "    stored(self, rows)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "archive.Archive.store = store_then_die\n"
        "j.archive_finished(30 * 86400, batch=100)\n"
    ))
    assert child.wait(60) == -signal.SIGKILL
    in_journal, in_archive = _ids_in(path), _ids_in(archive_path(path))
    assert in_archive == ids[:100] and in_journal == ids  # the batch is in both files, nothing is lost

    journal = Journal(path, daemon=True)
    assert journal.archive_check_due  # the pass did not end: the archive gets its whole-file check
    mine = {"sha256": f"sha-{ids[5]}"}
    assert [twin.id for twin in journal.possible_twins("fulcrum", "rec-1", 0, 10, mine)] == [ids[5]]  # once
    assert journal.check_archive() is None  # checked whole, and fine
    assert journal.archive_finished(30 * DAY, batch=100) == 300
    journal.close()
    assert _ids_in(path) == [] and _ids_in(archive_path(path)) == ids


def test_kill_9_at_random_moments_of_long_passes_loses_and_doubles_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ids = _filled_finished(path, 4000, clock=Clock(time.time() - 40 * DAY))
    rng = random.Random(5)
    for _ in range(6):
        # The child says when each batch is about to start; it is killed a few batches in, at a random
        # moment inside a batch (selecting, committing into the archive, or deleting from the journal).
        child = _child(path, (
            "def tell():\n"
            "    print('batch', flush=True)\n"
            "    return True\n"
            "j.archive_finished(30 * 86400, batch=25, keep_going=tell)\n"
            "print('finished', flush=True)\n"
        ), stdout=subprocess.PIPE)
        assert child.stdout is not None
        for _ in range(rng.randint(2, 12)):
            assert child.stdout.readline() == b"batch\n"
        time.sleep(rng.uniform(0, 0.004))
        child.send_signal(signal.SIGKILL)
        child.wait(60)
        in_journal, in_archive = _ids_in(path), _ids_in(archive_path(path))
        assert in_journal, "the pass ended before the kill"
        assert sorted(set(in_journal) | set(in_archive)) == ids  # no job lost
        assert len(set(in_journal) & set(in_archive)) <= 25  # at most the batch that was being moved

    journal = Journal(path, daemon=True)
    journal.archive_finished(30 * DAY)
    twins = journal.possible_twins("fulcrum", "rec-1", 0, 10, {"sha256": f"sha-{ids[1234]}"})
    journal.close()
    assert [twin.id for twin in twins] == [ids[1234]]
    assert _ids_in(path) == [] and _ids_in(archive_path(path)) == ids


def test_after_a_pass_has_ended_a_crash_leaves_nothing_to_check(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    _filled_finished(path, 200, clock=Clock(time.time() - 40 * DAY))
    journal = Journal(path, daemon=True)
    assert journal.archive_finished(30 * DAY) == 200
    assert journal.check_archive() is None  # checked whole once
    journal.add_jobs(_new(100, prefix="more-"))  # more jobs, finished long ago (the clock is set back)
    journal.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE jobs SET state = 'done', finished_at = ?", (time.time() - 40 * DAY,))
    conn.close()
    # One process runs a pass, then dies while idle with its journal still open.
    child = _child(path, "assert j.archive_finished(30 * 86400) == 100\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert child.wait(60) == -signal.SIGKILL
    reopened = Journal(path, daemon=True)
    assert not reopened.archive_check_due
    assert reopened.archived_count() == 300
    reopened.close()


def test_a_damaged_archive_is_moved_aside_by_its_check_and_a_fresh_one_started(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ids = _filled_finished(path, 3000, clock=Clock(time.time() - 40 * DAY))
    journal = Journal(path)
    journal.archive_finished(30 * DAY)
    journal.close()
    archived = archive_path(path)
    size = archived.stat().st_size
    with open(archived, "r+b") as handle:  # a page in the middle overwritten, the size unchanged
        handle.seek(size // 2 - (size // 2) % 4096)
        handle.write(os.urandom(4096))

    journal = Journal(path, daemon=True)
    assert journal.archive_check_due  # never checked whole yet
    problem, moved_to = journal.check_archive() or ("", Path())
    assert problem and moved_to.exists() and not archived.exists()
    assert moved_to.stat().st_size == size  # kept whole for a person to look at
    assert journal.archived_count() == 0
    (later,) = journal.add_jobs(_new(1, prefix="later-"))
    _finish(journal, later.id)
    assert journal.archive_finished(0.0) == 1  # a fresh archive takes the next pass
    assert _ids_in(archived) == [later.id] and ids[0] not in _ids_in(archived)
    journal.close()


def test_an_unreadable_archive_is_moved_aside_at_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    Journal(path).close()
    archive_path(path).write_bytes(b"not a database at all" * 500)
    journal = Journal(path)
    assert journal.archive_recovered_from is not None and journal.archive_recovered_from.exists()
    assert journal.archived_count() == 0
    journal.close()


def test_stopping_the_archiver_in_a_long_first_pass_returns_between_batches(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    ids = _filled_finished(path, 5000, clock=Clock(time.time() - 40 * DAY))
    journal = Journal(path, daemon=True)
    archiver = ArchiveThread(journal, 30 * DAY, first_pass_after=0.0)
    with journal._commits.lock:  # a long commit under way: the pass's first delete waits behind it
        archiver.start()
        deadline = time.monotonic() + 10
        while not _ids_in(archive_path(path)) and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping = threading.Thread(target=archiver.stop)
        stopping.start()
        time.sleep(0.1)
        assert stopping.is_alive()  # stop waits for the batch in hand
    stopping.join(10)
    assert not stopping.is_alive()
    journal.close()
    in_journal, in_archive = _ids_in(path), _ids_in(archive_path(path))
    assert in_archive == ids[:500]  # the batch in hand was finished, and no other begun
    assert in_journal == ids[500:]


def test_a_file_dropped_again_after_its_twin_was_archived_is_skipped(site: Site) -> None:
    site.config_path.write_text(site.config_path.read_text() + "archive_after: 1s\n")
    data = os.urandom(40_000)
    site.drop("rec-1", "scan.pdf", data)
    assert run_once_in_process(site) == 0
    time.sleep(1.2)
    site.drop("rec-1", "scan-resaved.pdf", data)
    assert run_once_in_process(site) == 0  # archives the first job at its start, then runs

    assert [item["name"] for item in site.attachments_on("rec-1")] == ["scan.pdf"]
    second = site.done / "fulcrum" / "rec-1" / "scan-resaved.pdf"
    assert second.read_bytes() == data
    note = json.loads(second.with_name("scan-resaved.pdf.duplicate.json").read_text())
    assert note["duplicate_of_file"].endswith("scan.pdf")
    assert [job.name for job in site.jobs()] == ["scan-resaved.pdf"]  # the first now lives in the archive
    assert len(_ids_in(archive_path(site.journal_path))) == 1
