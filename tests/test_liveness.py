"""Heartbeats: a thread waiting for work is healthy however long it waits; one inside a piece of work is
healthy while it makes progress and stuck once it has made none for longer than the limit."""

from __future__ import annotations

import threading

from hotfolder.liveness import Liveness, progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_waiting_is_never_stuck_and_work_without_progress_is() -> None:
    clock = Clock()
    liveness = Liveness(stuck_after=60.0, clock=clock)
    waiting, working = liveness.heartbeat("waiting"), liveness.heartbeat("working")
    with working.busy():
        clock.now += 59.0
        assert liveness.stuck() == []
        progress()  # this thread's heartbeat is `working`: progress is found without passing it around
        clock.now += 59.0
        assert liveness.stuck() == []
        clock.now += 2.0
        assert liveness.stuck() == [("working", 61.0)]
    assert liveness.stuck() == [] and waiting.stuck_for() == 0.0  # the work ended


def test_progress_counts_only_for_the_calling_threads_heartbeat() -> None:
    clock = Clock()
    liveness = Liveness(stuck_after=10.0, clock=clock)
    stuck_one, busy_other = liveness.heartbeat("stuck"), liveness.heartbeat("other")
    entered, leave = threading.Event(), threading.Event()

    def other_thread() -> None:
        with busy_other.busy():
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=other_thread)
    with stuck_one.busy():
        thread.start()
        entered.wait(5)
        clock.now += 11.0
        progress()  # the main thread's: `stuck` is fresh again, `other` is not
        assert [name for name, _ in liveness.stuck()] == ["other"]
        leave.set()
        thread.join()
    liveness.retire(busy_other)
    assert liveness.stuck() == []
