"""Per-target pacing: one 429 slows the whole target; upload slots; evenly spaced requests."""

from __future__ import annotations

import pytest

from hotfolder.errors import StepError
from hotfolder.limits import (
    CIRCUIT_FAILURES,
    DEFAULT_RATE_LIMIT_PAUSE,
    MAX_INLINE_WAIT,
    Circuit,
    TargetGate,
    TargetUnavailable,
)
from hotfolder.pipeline import OutcomeKind
from tests.harness import Site, run_once_in_process, site

__all__ = ["site"]


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_requests_are_spaced_at_the_configured_rate() -> None:
    fake = FakeTime()
    gate = TargetGate("t", requests_per_second=4, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        gate.before_request()
    assert fake.slept == [0.25, 0.25, 0.25, 0.25]


def test_a_rate_limit_pauses_every_job_of_the_target_without_costing_attempts() -> None:
    fake = FakeTime()
    gate = TargetGate("t", clock=fake.clock, sleep=fake.sleep)
    assert gate.rate_limited(30.0) == 30.0
    with pytest.raises(StepError) as caught:
        gate.before_request()  # another job: handed back, not parked on a worker
    assert caught.value.kind is OutcomeKind.PENDING
    assert caught.value.outcome.retry_after == pytest.approx(30.0)
    fake.now += 30.0
    gate.before_request()


def test_pauses_without_retry_after_escalate_and_reset() -> None:
    fake = FakeTime()
    gate = TargetGate("t", clock=fake.clock, sleep=fake.sleep)
    first, second = gate.rate_limited(None), gate.rate_limited(None)
    assert (first, second) == (DEFAULT_RATE_LIMIT_PAUSE, 2 * DEFAULT_RATE_LIMIT_PAUSE)
    gate.answered()
    assert gate.rate_limited(None) == DEFAULT_RATE_LIMIT_PAUSE


def test_short_pauses_are_slept_inline() -> None:
    fake = FakeTime()
    gate = TargetGate("t", clock=fake.clock, sleep=fake.sleep)
    gate.rate_limited(MAX_INLINE_WAIT / 2)
    gate.before_request()
    assert fake.slept == [MAX_INLINE_WAIT / 2]


def test_upload_slots_are_bounded() -> None:
    gate = TargetGate("t", max_concurrent_uploads=1)
    with gate.upload_slot(), pytest.raises(StepError) as caught, gate.upload_slot():
        pass
    assert caught.value.kind is OutcomeKind.PENDING
    with gate.upload_slot():
        pass  # released again


def test_429_with_retry_after_slows_the_whole_target(site: Site) -> None:
    """Over HTTP: after a 429 with Retry-After: 2, no job of the target calls the API for 2 s.

    One worker, so nothing is in flight when the 429 lands: without the shared pause the worker
    would take the next file and call the API at once.
    """
    site.config_path.write_text(site.config_path.read_text().replace("workers: 4", "workers: 1"))
    site.sandbox.add_fault("POST", r"^/api/v2/attachments$", status=429, count=1, headers={"Retry-After": "2"})
    for number in range(4):
        site.drop("rec-1", f"scan-{number}.pdf", f"scan {number}".encode())
    assert run_once_in_process(site) == 0
    api = [r for r in site.sandbox.requests() if r["path"].startswith("/api/")]
    limited = next(r for r in api if r["status"] == 429)
    after = [r for r in api if r["at"] > limited["at"]]
    assert after, "the jobs went on after the pause"
    assert min(r["at"] for r in after) - limited["at"] >= 1.9
    assert len(site.attachments_on("rec-1")) == 4


# -- the outage circuit ----------------------------------------------------------------------------


def _circuit(fake: FakeTime) -> tuple[Circuit, list[tuple[str, float]]]:
    said: list[tuple[str, float]] = []
    circuit = Circuit("t", first_probe=2.0, longest_probe=5.0, probe_grace=30.0, clock=fake.clock)
    circuit.on_pause = lambda seconds, reason: said.append(("paused", seconds))
    circuit.on_resume = lambda paused_for: said.append(("resumed", paused_for))
    return circuit, said


def test_the_circuit_opens_after_failures_in_a_row_and_an_answer_in_between_resets_them() -> None:
    fake = FakeTime()
    circuit, said = _circuit(fake)
    for _ in range(CIRCUIT_FAILURES - 1):
        assert circuit.admit() is False
        circuit.failed("HTTP 503", probe=False)
    circuit.answered()  # a 404 or a 429 is an answer: the vendor is there
    for _ in range(CIRCUIT_FAILURES - 1):
        circuit.failed("ConnectError", probe=False)
    assert not circuit.paused and said == []
    circuit.failed("ConnectError", probe=False)
    assert circuit.paused and said == [("paused", 2.0)]
    with pytest.raises(TargetUnavailable) as refused:
        circuit.admit()
    assert refused.value.outcome.kind is OutcomeKind.PENDING and refused.value.target == "t"
    assert "last: ConnectError" in refused.value.outcome.reason and refused.value.outcome.retry_after == 2.25


def test_one_probe_at_growing_intervals_then_an_answer_resumes() -> None:
    fake = FakeTime()
    circuit, said = _circuit(fake)
    for _ in range(CIRCUIT_FAILURES):
        circuit.failed("HTTP 503", probe=False)
    intervals = []
    for _ in range(3):
        fake.now += 1.99
        with pytest.raises(TargetUnavailable):
            circuit.admit()  # not yet
        fake.now += said[-1][1] - 1.99
        assert circuit.admit() is True  # the probe
        with pytest.raises(TargetUnavailable):
            circuit.admit()  # one probe at a time
        circuit.failed("HTTP 503", probe=False)  # a request sent before the pause does not escalate
        circuit.failed("HTTP 503", probe=True)
        intervals.append(said[-1][1])
    assert intervals == [4.0, 5.0, 5.0]  # doubled, up to the longest
    fake.now += 5.0
    assert circuit.admit() is True
    circuit.answered()
    assert not circuit.paused and said[-1][0] == "resumed"
    assert circuit.admit() is False


def test_a_probe_that_ends_without_a_verdict_lets_the_next_request_probe() -> None:
    fake = FakeTime()
    circuit, _said = _circuit(fake)
    for _ in range(CIRCUIT_FAILURES):
        circuit.failed("HTTP 503", probe=False)
    fake.now += 2.0
    assert circuit.admit() is True
    circuit.probe_lost()
    assert circuit.admit() is True
