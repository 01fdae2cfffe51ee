"""The link combiner's hand-over rules, with threads and a vendor stand-in that blocks on demand.

The end-to-end side (each file linked once, fewer record writes) is in test_linking.py against the
simulator; here the rules a worker relies on: it never waits behind another's link, every parked job
gets exactly one answer, and a refused batch fails no one but the job that tried alone.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from hotfolder.errors import StepError
from hotfolder.journal import LeaseLost
from hotfolder.linking import Answer, LinkCombiner, LinkParked
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import FileIdentity
from hotfolder.vendors.base import Ids, StepContext

KEY = ("record", "rec-1")


def ctx(job_id: int) -> StepContext:
    return StepContext(job_id=job_id, target="t", record="rec-1", group=None, name=f"f{job_id}.pdf",
                       path=Path(f"/nowhere/f{job_id}.pdf"), identity=FileIdentity(1, 1), digests=None, ids={})


class SlowRecord:
    """link_many that waits on ``gate`` for its first call, records each batch, refuses ``refused``."""

    def __init__(self, refused: frozenset[int] = frozenset()) -> None:
        self.target = SimpleNamespace(name="t")
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[int]] = []
        self.refused = refused

    def link_many(self, ctxs: Sequence[StepContext]) -> list[Ids]:
        self.entered.set()
        self.gate.wait(10)
        ids = [c.job_id for c in ctxs]
        self.batches.append(ids)
        if self.refused & set(ids):
            raise StepError(OutcomeKind.PERMANENT, "field refused an item")
        return [{"linked": True, "job": i} for i in ids]


class Answers:
    def __init__(self) -> None:
        self.got: dict[int, list[Answer]] = {}
        self.lock = threading.Lock()

    def __call__(self, job_id: int, answer: Answer, since: float) -> None:
        with self.lock:
            self.got.setdefault(job_id, []).append(answer)


def serve_in_thread(combiner: LinkCombiner, job_id: int, vendor: SlowRecord) -> threading.Thread:
    def run() -> None:
        with pytest.raises(LinkParked):
            combiner.link(KEY, ctx(job_id), vendor)  # type: ignore[arg-type]

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_job_arriving_while_the_record_is_served_parks_at_once_and_is_linked_in_the_next_round() -> None:
    vendor, answers = SlowRecord(), Answers()
    combiner = LinkCombiner(lambda key: threading.Lock(), answers)
    server = serve_in_thread(combiner, 1, vendor)
    assert vendor.entered.wait(5)

    for job_id in (2, 3):  # the server is inside the vendor call: these must not wait for it
        with pytest.raises(LinkParked):
            combiner.link(KEY, ctx(job_id), vendor)  # type: ignore[arg-type]
    assert answers.got == {}  # not linked yet: parked, and this thread is free
    vendor.gate.set()
    server.join(5)

    assert vendor.batches == [[1], [2, 3]]
    assert answers.got == {i: [{"linked": True, "job": i}] for i in (1, 2, 3)}  # one answer each


def test_a_refused_batch_fails_only_the_job_that_tries_alone_and_the_others_retry() -> None:
    vendor, answers = SlowRecord(refused=frozenset({3})), Answers()
    combiner = LinkCombiner(lambda key: threading.Lock(), answers)
    server = serve_in_thread(combiner, 1, vendor)
    assert vendor.entered.wait(5)
    for job_id in (3, 4):
        with pytest.raises(LinkParked):
            combiner.link(KEY, ctx(job_id), vendor)  # type: ignore[arg-type]
    vendor.gate.set()
    server.join(5)

    assert vendor.batches == [[1], [3, 4], [3]]
    assert answers.got[1] == [{"linked": True, "job": 1}]
    (refusal,) = answers.got[3]
    assert isinstance(refusal, StepError) and refusal.outcome.kind is OutcomeKind.PERMANENT
    assert answers.got[4] == [None]  # no answer: it links again from the journal, on its own turn


def test_after_the_last_round_the_next_job_serves_the_record_itself() -> None:
    vendor, answers = SlowRecord(), Answers()
    vendor.gate.set()
    combiner = LinkCombiner(lambda key: threading.Lock(), answers)
    for job_id in (1, 2):
        with pytest.raises(LinkParked):
            combiner.link(KEY, ctx(job_id), vendor)  # type: ignore[arg-type]
    assert vendor.batches == [[1], [2]]
    assert set(answers.got) == {1, 2}


def test_a_job_whose_lease_moved_to_another_daemon_is_left_out_of_the_round() -> None:
    """With a shared journal the round asks for each job's lease once the record is locked: a job
    another daemon may hold now is not linked here, and is told so (its worker forgets it)."""
    vendor, answers = SlowRecord(), Answers()
    vendor.gate.set()

    def confirm(job_id: int) -> None:
        if job_id == 2:
            raise LeaseLost(job_id, "its lease ended")

    combiner = LinkCombiner(lambda key: threading.Lock(), answers, confirm=confirm)
    for job_id in (1, 2):
        with pytest.raises(LinkParked):
            combiner.link(KEY, ctx(job_id), vendor)  # type: ignore[arg-type]
    assert vendor.batches == [[1]]
    (lost,) = answers.got[2]
    assert isinstance(lost, LeaseLost)


def test_an_unexpected_error_in_a_round_leaves_no_job_without_an_answer() -> None:
    """A bug or a broken connection inside the vendor call (not a vendor's answer): the server's
    worker sees the error, and every job of the round, its own included, is given back to try again."""
    vendor, answers = SlowRecord(), Answers()

    def broken(ctxs: Sequence[StepContext]) -> list[Ids]:
        vendor.entered.set()
        vendor.gate.wait(10)
        raise RuntimeError("connection pool closed")

    vendor.link_many = broken  # type: ignore[method-assign]
    combiner = LinkCombiner(lambda key: threading.Lock(), answers)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            combiner.link(KEY, ctx(1), vendor)  # type: ignore[arg-type]
        except BaseException as error:
            failure.append(error)

    server = threading.Thread(target=serve)
    server.start()
    assert vendor.entered.wait(5)
    with pytest.raises(LinkParked):
        combiner.link(KEY, ctx(2), vendor)  # type: ignore[arg-type]
    vendor.gate.set()
    server.join(5)

    assert [type(error) for error in failure] == [RuntimeError]
    assert answers.got == {1: [None], 2: [None]}
    vendor.link_many = SlowRecord.link_many.__get__(vendor)  # type: ignore[method-assign]
    with pytest.raises(LinkParked):  # the record is served again by the next job to come
        combiner.link(KEY, ctx(3), vendor)  # type: ignore[arg-type]
    assert answers.got[3] == [{"linked": True, "job": 3}]


def test_a_lease_check_that_breaks_gives_the_round_back_rather_than_losing_it() -> None:
    """Asking the journal for a lease can fail otherwise than LeaseLost; the jobs taken for that round
    must still get their (empty) answer, or their workers' claims would never end."""
    vendor, answers = SlowRecord(), Answers()
    vendor.gate.set()

    def confirm(job_id: int) -> None:
        raise RuntimeError("the journal answered nonsense")

    combiner = LinkCombiner(lambda key: threading.Lock(), answers, confirm=confirm)
    with pytest.raises(RuntimeError):
        combiner.link(KEY, ctx(1), vendor)  # type: ignore[arg-type]
    assert answers.got == {1: [None]}
    assert vendor.batches == []
