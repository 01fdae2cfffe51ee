"""The readiness tracker's rules, fed with made-up observations: no file system, no clock, no threads.

Each test plays what the watcher's settle thread would see (lstat figures at a time, the readiness
tests' answers) and checks what the tracker answers; the I/O around it is tests/test_watcher.py,
tests/test_readiness.py and the share tests.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotfolder.watch.tracker import (
    EXAMINE,
    NOTHING,
    Answers,
    ReadinessTracker,
    Ready,
    Refuse,
    Refused,
    Wait,
)
from hotfolder.watch.writers import WRITER_OPEN

PATH = "/in/fulcrum/rec-1/scan.pdf"
MISSING_END = "PDF has no %%EOF: truncated?"


def tracker(**overrides: float) -> ReadinessTracker:
    options = {"quiet_for": 5.0, "recheck": 1.0, "incomplete_timeout": 600.0, **overrides}
    return ReadinessTracker(**options)  # type: ignore[arg-type]


def settled(t: ReadinessTracker, size: int = 100, mtime: int = 7, at: float = 0.0) -> float:
    """Show ``PATH`` with these figures and again when due; return the time of the examination."""
    assert t.file_seen(PATH, size, mtime, at) is NOTHING
    assert t.due(at + t.quiet_for - 0.01) == []
    assert t.due(at + t.quiet_for) == [PATH]
    assert t.file_seen(PATH, size, mtime, at + t.quiet_for) is EXAMINE
    return at + t.quiet_for


def test_a_file_quiet_for_long_enough_is_examined_then_handed_over_once() -> None:
    t = tracker()
    now = settled(t)
    assert t.examined(PATH, Answers(), now) == Ready(waited=False)
    assert t.pending_count() == 0
    assert t.file_seen(PATH, 100, 7, now + 60) is NOTHING  # the same figures: already handed over
    assert t.due(now + 600) == []


def test_figures_that_move_start_settle_again() -> None:
    t = tracker()
    assert t.file_seen(PATH, 100, 7, 0.0) is NOTHING
    assert t.file_seen(PATH, 200, 8, 3.0) is NOTHING  # grew: due 5 s from now, not from the start
    assert t.due(5.0) == []  # the first due time went stale
    assert t.due(8.0) == [PATH]
    assert t.file_seen(PATH, 200, 8, 8.0) is EXAMINE


def test_a_look_before_the_due_time_changes_nothing() -> None:
    t = tracker()
    t.file_seen(PATH, 100, 7, 0.0)
    assert t.file_seen(PATH, 100, 7, 2.0) is NOTHING  # an event's nomination
    assert t.due(5.0) == [PATH]


def test_a_file_changed_after_it_was_handed_over_is_a_new_candidate() -> None:
    t = tracker()
    t.examined(PATH, Answers(), settled(t))
    assert t.file_seen(PATH, 300, 9, 20.0) is NOTHING
    assert t.pending_count() == 1
    assert t.due(25.0) == [PATH]


def test_a_writer_at_work_makes_it_wait_however_long_said_once() -> None:
    t = tracker(incomplete_timeout=1.0)
    now = settled(t)
    first = t.examined(PATH, Answers(writer_open=True), now)
    assert first == Wait(WRITER_OPEN, first=True)
    for hour in range(1, 6):
        now += 3600
        assert t.due(now) == [PATH]
        assert t.file_seen(PATH, 100, 7, now) is EXAMINE
        assert t.examined(PATH, Answers(writer_open=True), now) == Wait(WRITER_OPEN, first=False), hour
    assert [w.reason for w in t.waiting()] == [WRITER_OPEN]
    # The writer closed, the end is missing: only now does the incomplete timeout start.
    assert t.examined(PATH, Answers(incomplete=MISSING_END), now) == Wait(MISSING_END, first=True)
    refusal = t.examined(PATH, Answers(incomplete=MISSING_END), now + 1.0)
    assert isinstance(refusal, Refuse) and refusal.reason.startswith(MISSING_END)
    assert "incomplete_timeout" in refusal.reason


def test_an_end_missing_for_the_timeout_is_refused_with_the_reason() -> None:
    t = tracker(incomplete_timeout=600.0)
    now = settled(t)
    assert t.examined(PATH, Answers(incomplete=MISSING_END), now) == Wait(MISSING_END, first=True)
    assert t.waiting_changed
    assert [(w.path, w.reason, w.since) for w in t.waiting()] == [(PATH, MISSING_END, now)]
    assert not t.waiting_changed
    assert t.examined(PATH, Answers(incomplete=MISSING_END), now + 599) == Wait(MISSING_END, first=False)
    assert not t.waiting_changed  # the same reason: nothing new to write or log
    assert isinstance(t.examined(PATH, Answers(incomplete=MISSING_END), now + 600), Refuse)
    assert t.waiting() == [] and t.pending_count() == 0
    assert t.file_seen(PATH, 100, 7, now + 700) is NOTHING  # refused once, not again


def test_an_end_that_arrives_ends_the_wait() -> None:
    t = tracker()
    now = settled(t)
    t.examined(PATH, Answers(incomplete=MISSING_END), now)
    assert t.examined(PATH, Answers(), now + 1) == Ready(waited=True)
    assert t.waiting() == []


def test_fresh_figures_through_an_open_that_differ_start_settle_again_from_them() -> None:
    t = tracker()
    now = settled(t, size=100, mtime=7)
    assert t.examined(PATH, Answers(fresh=(150, 8)), now) is NOTHING
    assert t.due(now + 4.99) == []
    assert t.due(now + 5.0) == [PATH]
    assert t.file_seen(PATH, 150, 8, now + 5.0) is EXAMINE
    assert t.examined(PATH, Answers(fresh=(150, 8)), now + 5.0) == Ready()


def test_quiet_for_includes_the_mount_cache_where_the_caller_says_so() -> None:
    t = tracker(quiet_for=1.0 + 21.0)  # settle 1 s + sshfs's 20 s cache + the kernel's 1 s
    t.file_seen(PATH, 100, 7, 0.0)
    assert t.due(21.9) == []
    assert t.due(22.0) == [PATH]


def test_empty_files_are_no_candidates_and_are_looked_at_again_only_when_polling() -> None:
    native = tracker()
    assert native.file_seen(PATH, 0, 1, 0.0) is NOTHING
    assert native.pending_count() == 0 and native.next_due() is None
    polling = tracker(empty_recheck=2.0)
    polling.file_seen(PATH, 0, 1, 0.0)
    assert polling.pending_count() == 0  # not pending work
    assert polling.due(2.0) == [PATH]
    assert polling.file_seen(PATH, 50, 2, 2.0) is NOTHING  # filled: a candidate now
    assert polling.pending_count() == 1


def test_a_non_regular_file_is_refused_once_then_a_regular_one_there_is_new() -> None:
    t = tracker()
    assert t.other_seen(PATH, "FIFO: not a regular file") == Refused("FIFO: not a regular file")
    assert t.other_seen(PATH, "FIFO: not a regular file") is NOTHING
    assert t.file_seen(PATH, 10, 1, 0.0) is NOTHING
    assert t.pending_count() == 1


def test_forget_and_gone_drop_everything_known() -> None:
    t = tracker()
    now = settled(t)
    t.examined(PATH, Answers(writer_open=True), now)
    t.forget(PATH)
    assert t.waiting() == [] and t.pending_count() == 0 and t.known() == set()
    assert t.due(now + 100) == []
    t.file_seen(PATH, 100, 7, now)
    t.gone(PATH)
    assert t.known() == set()


def test_a_failed_look_is_tried_again_later() -> None:
    t = tracker()
    t.file_seen(PATH, 100, 7, 0.0)
    t.look_failed(PATH, 3.0)
    assert t.due(5.0) == []
    assert t.due(8.0) == [PATH]


def test_examined_after_the_file_was_dropped_does_nothing() -> None:
    t = tracker()
    now = settled(t)
    t.gone(PATH)
    assert t.examined(PATH, Answers(), now) is NOTHING


@pytest.mark.parametrize("answers", [Answers(writer_open=True), Answers(incomplete=MISSING_END)])
def test_a_waiting_file_is_looked_at_again_after_recheck(answers: Answers) -> None:
    t = tracker(recheck=1.5)
    now = settled(t)
    t.examined(PATH, answers, now)
    assert t.due(now + 1.49) == []
    assert t.due(now + 1.5) == [PATH]


_steps = st.lists(
    st.one_of(
        # lstat shows (size, mtime); if examined, the tests answer (writer at work, end missing)
        st.tuples(st.just("seen"), st.integers(0, 3), st.integers(0, 2), st.booleans(), st.booleans()),
        st.tuples(st.just("forget"), st.just(0), st.just(0), st.just(False), st.just(False)),
    ),
    max_size=40,
)


@given(_steps, st.lists(st.floats(0, 10), min_size=40, max_size=40))
def test_never_handed_over_early_nor_twice_for_the_same_figures(steps: list, gaps: list[float]) -> None:
    """Whatever is seen in whatever order: a file is examined only once its figures held for
    quiet_for, and handed over (or refused) never twice for the same figures unless it was forgotten
    or emptied in between."""
    t = tracker(quiet_for=5.0, recheck=1.0, incomplete_timeout=30.0)
    now, first_seen, figures, handed = 0.0, 0.0, None, set()
    for (kind, size_step, mtime, writer, missing), gap in zip(steps, gaps, strict=False):
        now += gap
        if kind == "forget":
            t.forget(PATH)
            handed.clear()
            figures = None
            continue
        size = size_step * 10
        if (size, mtime) != figures:
            first_seen, figures = now, (size, mtime)
        if size == 0:
            handed.clear()  # an emptied file is forgotten: its next content is new
        verdict = t.file_seen(PATH, size, mtime, now)
        if verdict is not EXAMINE:
            assert verdict is NOTHING
            continue
        assert size > 0 and now - first_seen >= 5.0
        assert figures not in handed
        verdict = t.examined(PATH, Answers(writer_open=writer, incomplete=MISSING_END if missing else None), now)
        if isinstance(verdict, Ready | Refuse):
            assert isinstance(verdict, Ready) == (not writer and not missing)
            handed.add(figures)
        else:
            assert isinstance(verdict, Wait)
