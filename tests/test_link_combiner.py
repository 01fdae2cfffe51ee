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
