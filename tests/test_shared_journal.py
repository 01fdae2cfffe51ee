"""Several daemons on one PostgreSQL journal: claims, leases, fencing, the link lock, and the database
going away (a restart, a terminated connection, a stop) while nodes work. Each node here is a
``PostgresJournal`` of its own, as each daemon has; the whole daemons meet in tests/test_multinode.py."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from hotfolder.journal import LeaseLost, NewJob, StepRecord
from hotfolder.journal.pgschema import SCHEMA_VERSION
from hotfolder.journal.postgres import PostgresJournal
from hotfolder.pipeline import State
from tests.harness import wait_for
from tests.postgres import PostgresServer


@pytest.fixture
def nodes(pg_url: str) -> Iterator[dict[str, PostgresJournal]]:
    """Three nodes on one database, leases of 3 s, renewed (every second) while they live."""
    opened = {name: PostgresJournal(pg_url, node=name, lease=3.0, daemon=True) for name in ("a", "b", "c")}
    yield opened
    for journal in opened.values():
        with contextlib.suppress(Exception):
            journal.close()


def _jobs(journal: PostgresJournal, count: int, prefix: str = "f") -> list[int]:
    added = journal.add_jobs([NewJob("t", "r", None, f"{prefix}{n}", f"t/r/{prefix}{n}", 1, 1) for n in range(count)])
    return [job.id for job in added]


def test_each_ready_job_is_claimed_by_one_node_however_many_ask_at_once(nodes: dict[str, PostgresJournal]) -> None:
    ids = _jobs(nodes["a"], 120)
    claimed: dict[str, list[int]] = {name: [] for name in nodes}
    # Within one daemon the runner claims under its own lock, excluding what its workers hold.
    locks = {name: threading.Lock() for name in nodes}

    def claim_all(name: str) -> None:
        while True:
            with locks[name]:
                got = nodes[name].ready_ids(time.time(), 1, set(claimed[name]))
                claimed[name].extend(got)
            if not got:
                return

    threads = [threading.Thread(target=claim_all, args=(name,)) for name in nodes for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [job_id for got in claimed.values() for job_id in got]
    assert sorted(every) == sorted(ids)  # each job once, none twice
    assert sum(1 for got in claimed.values() if got) >= 2  # the nodes really competed
    for name, got in claimed.items():
        for job_id in got[:3]:
            assert nodes[name].holders(job_id) == [(name, "hash")]


def test_a_frozen_node_past_its_lease_cannot_overwrite_the_new_owner(pg_url: str) -> None:
    """Node A claims a job and stops renewing (frozen: no heartbeat); once the lease is over, B claims it
    and moves it on. A, waking up, is refused before a side effect and its late step result is not
    written: the job stays at B's step."""
    frozen = PostgresJournal(pg_url, node="a", lease=3.0)  # no heartbeat thread: as if SIGSTOPped
    other = PostgresJournal(pg_url, node="b", lease=3.0, daemon=True)
    try:
        (job_id,) = _jobs(frozen, 1)
        assert frozen.ready_ids(time.time(), 5) == [job_id]
        frozen.check_lease(job_id)  # held
        frozen.record(job_id, StepRecord(state=State.PRESIGN, attempts=0, digests={"sha256": "aa"}))
        assert other.ready_ids(time.time(), 5) == []  # A's lease is alive
        wait_for(lambda: other.ready_ids(time.time(), 5) == [job_id], timeout=10, what="A's lease to end")
        other.record(job_id, StepRecord(state=State.UPLOAD, attempts=0, vendor_update={"upload": "b"}))
        with pytest.raises(LeaseLost):
            frozen.check_lease(job_id)
        with pytest.raises(LeaseLost):
            frozen.record(job_id, StepRecord(state=State.LINK, attempts=0, vendor_update={"upload": "a"}))
        job = other.get(job_id)
        assert job.state is State.UPLOAD and job.vendor == {"upload": "b"}
        assert [node for node, _ in other.holders(job_id)] == ["a", "b"]
        assert other.holders(job_id)[1] == ("b", "presign")  # B resumed at A's last committed step
    finally:
        frozen.close()
        other.close()


def test_a_node_waking_after_another_finished_its_job_changes_nothing(pg_url: str) -> None:
    """The campaign's find: a daemon frozen mid-step wakes up; its heartbeat runs first and learns the
    lease is gone; then the step it was in returns and its result is written. By then another node has
    finished the job: the late result must not touch it (not even through the path tools use)."""
    sleeper = PostgresJournal(pg_url, node="a", lease=3.0, daemon=True)
    other = PostgresJournal(pg_url, node="b", lease=3.0, daemon=True)
    try:
        assert sleeper._heartbeat is not None
        sleeper._closing.set()  # frozen: the heartbeat stops...
        sleeper._heartbeat.join(5)
        sleeper._closing.clear()  # ...and the rest of the node with it, until it wakes below
        (job_id,) = _jobs(sleeper, 1)
        assert sleeper.ready_ids(time.time(), 1) == [job_id]
        wait_for(lambda: other.ready_ids(time.time(), 1) == [job_id], timeout=10, what="the lease to end")
        other.record(job_id, StepRecord(state=State.DONE, attempts=0, outcome_path="/done/f0"))
        sleeper._renew()  # wakes: the heartbeat's first renewal finds the lease gone
        with pytest.raises(LeaseLost):
            sleeper.record(job_id, StepRecord(state=State.FINALIZE, attempts=0, vendor_update={"late": True}))
        job = other.get(job_id)
        assert job.state is State.DONE and job.finished and "late" not in job.vendor
    finally:
        sleeper.close()
        other.close()


def test_a_file_another_node_moved_out_after_this_one_saw_it_is_not_journaled_again(
        nodes: dict[str, PostgresJournal]) -> None:
    """Every node's watcher sees every file. Node B saw one, then node A finished its job and moved it
    out, then B's intake arrives: no second job (it would only find the file gone). The same name
    dropped again after that finish is a new file, and a new job."""
    a, b = nodes["a"], nodes["b"]
    seen_by_b = time.time()
    (job_id,) = _jobs(a, 1)
    assert a.ready_ids(time.time(), 1) == [job_id]
    a.record(job_id, StepRecord(state=State.DONE, attempts=0, outcome_path="/done/t/r/f0"))
    late = NewJob("t", "r", None, "f0", "t/r/f0", 1, 1, seen_at=seen_by_b)
    assert b.add_jobs([late]) == []
    again = b.add_jobs([NewJob("t", "r", None, "f0", "t/r/f0", 1, 1, seen_at=time.time())])
    assert [job.relpath for job in again] == ["t/r/f0"]


def test_renewals_keep_a_lease_past_its_length_and_a_stop_gives_it_back(nodes: dict[str, PostgresJournal]) -> None:
    a, b = nodes["a"], nodes["b"]
    (job_id,) = _jobs(a, 1)
    assert a.ready_ids(time.time(), 1) == [job_id]
    time.sleep(4.5)  # one and a half leases: renewed meanwhile
    a.check_lease(job_id)
    assert b.ready_ids(time.time(), 1) == []
    assert {n.name: n.jobs_held for n in b.nodes()} == {"a": 1, "b": 0, "c": 0}
    a.close()
    assert b.ready_ids(time.time(), 1) == [job_id]  # at once, not after the lease
    assert {n.name: n.stopped_at is not None for n in b.nodes()}["a"]


def test_a_wait_or_a_finish_gives_the_job_back(nodes: dict[str, PostgresJournal]) -> None:
    a, b = nodes["a"], nodes["b"]
    first, second = _jobs(a, 2)
    assert a.ready_ids(time.time(), 2) == [first, second]
    a.record(first, StepRecord(state=State.UPLOAD, attempts=1, next_attempt_at=time.time() + 0.5))
    a.record(second, StepRecord(state=State.DONE, attempts=0))
    with pytest.raises(LeaseLost):
        a.check_lease(first)  # given back with the wait
    assert wait_for(lambda: b.ready_ids(time.time(), 5), timeout=5) == [first]
    assert b.get(second).finished


def test_a_killed_node_restarting_gives_back_what_it_held(pg_url: str) -> None:
    before = PostgresJournal(pg_url, node="a", lease=60.0)  # killed: never closed, lease a minute long
    (job_id,) = _jobs(before, 1)
    assert before.ready_ids(time.time(), 1) == [job_id]
    again = PostgresJournal(pg_url, node="a", lease=60.0, daemon=True)
    try:
        assert again.ready_ids(time.time(), 1) == [job_id]  # no minute's wait
        with pytest.raises(LeaseLost):
            before.record(job_id, StepRecord(state=State.LINK, attempts=0))  # the dead run's write is fenced
    finally:
        again.close()
        before.close()


def test_links_to_one_record_never_run_at_once_across_nodes(nodes: dict[str, PostgresJournal]) -> None:
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    guard = threading.Lock()

    def link(name: str) -> None:
        for _ in range(5):
            with nodes[name].exclusive(("fulcrum", "rec-1", "")):
                with guard:
                    inside.append(name)
                    if len(inside) > 1:
                        overlaps.append(tuple(inside))
                time.sleep(0.02)
                with guard:
                    inside.remove(name)

    threads = [threading.Thread(target=link, args=(name,)) for name in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert overlaps == []
    with nodes["a"].exclusive(("fulcrum", "rec-1", "")), nodes["b"].exclusive(("fulcrum", "rec-2", "")):
        pass  # another record's lock is another lock


def test_a_postgresql_restart_and_a_terminated_connection_lose_and_repeat_nothing(
        postgres: PostgresServer, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    a = PostgresJournal(pg_url, node="a", lease=30.0, daemon=True)
    try:
        ids = _jobs(a, 3)
        assert a.ready_ids(time.time(), 3) == ids
        a.record(ids[0], StepRecord(state=State.PRESIGN, attempts=0))
        postgres.restart()
        a.record(ids[0], StepRecord(state=State.UPLOAD, attempts=0, vendor_update={"k": 1}))
        database = pg_url.rsplit("/", 1)[1]
        assert postgres.terminate(database) >= 1  # pg_terminate_backend of the node's connections
        a.record(ids[1], StepRecord(state=State.DONE, attempts=0))
        assert a.add_jobs([NewJob("t", "r", None, "f0", "t/r/f0", 1, 1)]) == []  # still one job per path
        assert [(j.id, j.state) for j in sorted(a.jobs(), key=lambda j: j.id)] == [
            (ids[0], State.UPLOAD), (ids[1], State.DONE), (ids[2], State.HASH)]
        a.check_lease(ids[2])  # the leases outlived the restart
    finally:
        a.close()


def test_while_postgresql_is_down_calls_wait_and_say_why_then_go_on(
        postgres: PostgresServer, pg_url: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    a = PostgresJournal(pg_url, node="a", lease=30.0, daemon=True)
    added: list[object] = []
    try:
        postgres.stop()
        intake = threading.Thread(target=lambda: added.extend(a.add_jobs([NewJob("t", "r", None, "f", "t/r/f", 1, 1)])))
        intake.start()
        wait_for(lambda: a.waiting_reason is not None, timeout=30, what="the journal to notice the outage")
        assert intake.is_alive() and added == []  # waiting, not failing
        # Through the stdlib handler once a daemon in this worker configured logging, else printed.
        assert "journal database unavailable" in caplog.text + capsys.readouterr().out
        postgres.start()
        intake.join(60)
        assert len(added) == 1 and a.waiting_reason is None
        assert len(a.jobs()) == 1
    finally:
        if not postgres.data.joinpath("postmaster.pid").exists():
            postgres.start()
        a.close()


def test_the_schema_has_a_version_row_and_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresJournal(pg_url, node="a").close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()  # type: ignore[misc]
        assert int(version) == SCHEMA_VERSION
        PostgresJournal(pg_url, node="b").close()  # opened again: nothing to migrate
        conn.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(RuntimeError, match="newer than this hotfolder"):
        PostgresJournal(pg_url, node="c")
