"""The journal's promises: durable steps, one active job per path, and recovery from damage."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from daemon.journal import Journal, StepRecord
from daemon.pipeline import State


def _add(journal: Journal, relpath: str = "fulcrum/rec-1/scan.pdf"):
    target, record, name = relpath.split("/")
    return journal.add_job(target=target, record=record, group=None, name=name, relpath=relpath,
                           size=10, mtime_ns=123)


def test_a_path_has_one_active_job_until_it_finishes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    first = _add(journal)
    assert first is not None and first.state is State.HASH
    assert _add(journal) is None  # seen again by a rescan: no second job
    journal.record(first.id, StepRecord(state=State.DONE, attempts=0))
    again = _add(journal)  # a new file dropped later under the same name is a new job
    assert again is not None and again.id != first.id


def test_steps_survive_reopen_and_keep_vendor_ids(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal(path)
    job = _add(journal)
    assert job is not None
    journal.record(job.id, StepRecord(state=State.UPLOAD, attempts=1, vendor_update={"attachment_id": "a-1"},
                                      digests={"sha256": "ff"}, size=11, mtime_ns=456))
    journal.record(job.id, StepRecord(state=State.FINALIZE, attempts=1, vendor_update={"etag": "e"},
                                      last_error={"step": "upload", "reason": "503"}))
    journal.close()
    reopened = Journal(path).get(job.id)
    assert reopened.state is State.FINALIZE
    assert reopened.vendor == {"attachment_id": "a-1", "etag": "e"}
    assert reopened.digests == {"sha256": "ff"} and (reopened.size, reopened.mtime_ns) == (11, 456)
    assert reopened.last_error == {"step": "upload", "reason": "503"}


def test_ready_jobs_honour_retry_time_and_exclusions(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db", clock=lambda: 1000.0)
    a, b = _add(journal, "t/r/a"), _add(journal, "t/r/b")
    assert a is not None and b is not None
    journal.record(a.id, StepRecord(state=State.UPLOAD, attempts=1, next_attempt_at=1060.0))
    assert [j.id for j in journal.ready_jobs(1000.0, 10)] == [b.id]
    assert journal.ready_jobs(1000.0, 10, exclude={b.id}) == []
    assert journal.next_wakeup(exclude={b.id}) == 1060.0
    assert [j.id for j in journal.ready_jobs(1061.0, 10)] == [b.id, a.id]


def test_a_commit_is_durable_when_the_process_is_killed(tmp_path: Path) -> None:
    """A child commits a step and is SIGKILLed at once; the step is there afterwards."""
    path = tmp_path / "j.db"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from daemon.journal import Journal, StepRecord\n"
        "from daemon.pipeline import State\n"
        "j = Journal(Path(sys.argv[1]))\n"
        "job = j.add_job(target='t', record='r', group=None, name='f', relpath='t/r/f', size=1, mtime_ns=1)\n"
        "j.record(job.id, StepRecord(state=State.LINK, attempts=0, vendor_update={'attachment_id': 'x'}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], cwd=Path(__file__).parents[1])
    assert result.returncode == -9
    job = Journal(path).jobs()[0]
    assert job.state is State.LINK and job.vendor == {"attachment_id": "x"}


def test_torn_wal_tail_keeps_what_was_committed(tmp_path: Path) -> None:
    """Cut the write-ahead log mid-frame (a power cut during a write): the journal still opens."""
    path = tmp_path / "j.db"
    journal = Journal(path)
    job = _add(journal)
    assert job is not None
    for state in (State.PRESIGN, State.UPLOAD, State.FINALIZE):
        journal.record(job.id, StepRecord(state=state, attempts=0))
    # Copy the files as a power cut would leave them (the live connection keeps the WAL unmerged).
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(str(path) + suffix, str(copy / "j.db") + suffix)
    wal = copy / "j.db-wal"
    size = wal.stat().st_size
    assert size > 100
    with open(wal, "r+b") as handle:
        handle.truncate(size - 100)  # the last frame is torn
    reopened = Journal(copy / "j.db")
    state = reopened.get(job.id).state
    # The torn frame's transaction is dropped; the earlier ones are intact.
    assert state in (State.UPLOAD, State.FINALIZE)
    assert reopened.recovered_from is None


def test_garbage_journal_is_moved_aside_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(os.urandom(8192))
    journal = Journal(path)
    assert journal.recovered_from is not None and journal.recovered_from.exists()
    assert _add(journal) is not None


def test_zero_filled_journal_tail(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    journal = Journal(path)
    job = _add(journal)
    assert job is not None
    journal.close()
    with open(path, "ab") as handle:
        handle.write(b"\0" * 4096)
    reopened = Journal(path)
    assert reopened.recovered_from is None
    assert reopened.get(job.id).relpath == "fulcrum/rec-1/scan.pdf"
