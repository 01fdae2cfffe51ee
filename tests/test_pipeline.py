"""The pure state machine, exhaustively: every (state, outcome) pair, and the attempt budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotfolder.pipeline import (
    ACTIVE_STATES,
    MOVE_STATES,
    STEP_ORDER,
    TERMINAL_STATES,
    Outcome,
    OutcomeKind,
    RetryPolicy,
    State,
    backoff_delay,
    decide,
)

POLICY = RetryPolicy(attempts=4, backoff=2.0, max_backoff=60.0)
VENDOR_STEPS = [State.HASH, State.PRESIGN, State.UPLOAD, State.FINALIZE, State.LINK]


def test_steps_follow_the_table_in_order() -> None:
    state = State.HASH
    walked = [state]
    while state not in TERMINAL_STATES:
        state = decide(state, 0, Outcome.success(), POLICY).state
        walked.append(state)
    assert walked == [*STEP_ORDER, State.TO_DONE, State.DONE]


# (state, outcome kind) → expected next state, for a job with attempts to spare.
EXPECTED: dict[tuple[State, OutcomeKind], State] = {}
for step in VENDOR_STEPS:
    EXPECTED[(step, OutcomeKind.TRANSIENT)] = step
    # Back to presign, but never forward: at hash there is nothing presigned to lose.
    EXPECTED[(step, OutcomeKind.EXPIRED)] = State.HASH if step is State.HASH else State.PRESIGN
    EXPECTED[(step, OutcomeKind.NEED_PRESIGN)] = State.HASH if step is State.HASH else State.PRESIGN
    EXPECTED[(step, OutcomeKind.PERMANENT)] = State.TO_FAILED
    EXPECTED[(step, OutcomeKind.FILE_CHANGED)] = State.HASH
    EXPECTED[(step, OutcomeKind.FILE_GONE)] = State.GONE
    EXPECTED[(step, OutcomeKind.PENDING)] = step
EXPECTED[(State.PRESIGN, OutcomeKind.DUPLICATE)] = State.TO_DONE
for move in MOVE_STATES:
    for kind in OutcomeKind:
        if kind not in (OutcomeKind.SUCCESS, OutcomeKind.CHANGED_TOO_OFTEN):
            EXPECTED[(move, kind)] = move  # an outcome move is retried, never abandoned
# ...except that bytes changed after they were sent are never moved to done/ as if nothing happened:
# they are sent again, or, once resent too often, the file goes to failed/.
EXPECTED[(State.TO_DONE, OutcomeKind.FILE_CHANGED)] = State.HASH
EXPECTED[(State.TO_DONE, OutcomeKind.CHANGED_TOO_OFTEN)] = State.TO_FAILED


@pytest.mark.parametrize(("state", "kind"), sorted(EXPECTED, key=str))
def test_every_failure_pair(state: State, kind: OutcomeKind) -> None:
    decision = decide(state, 0, Outcome(kind, "why", 503), POLICY, jitter=0.5)
    assert decision.state is EXPECTED[(state, kind)]
    if kind is OutcomeKind.PENDING:
        assert decision.delay > 0
    costs_attempt = kind in {OutcomeKind.TRANSIENT, OutcomeKind.EXPIRED}
    moved_on = state is State.TO_DONE and kind in (OutcomeKind.FILE_CHANGED, OutcomeKind.CHANGED_TOO_OFTEN)
    waiting = kind is OutcomeKind.PENDING  # waiting is never a setback, not even on the way out
    assert decision.attempts == (1 if (costs_attempt or state in MOVE_STATES) and not (moved_on or waiting) else 0)
    if kind is OutcomeKind.PERMANENT and state not in MOVE_STATES:
        assert decision.error == "why" and decision.status == 503


def test_every_active_state_and_kind_is_covered() -> None:
    for state in ACTIVE_STATES:
        for kind in OutcomeKind:
            if kind is OutcomeKind.SUCCESS or (kind is OutcomeKind.DUPLICATE and state is not State.PRESIGN):
                continue
            if kind is OutcomeKind.CHANGED_TOO_OFTEN and state is not State.TO_DONE:
                continue
            assert (state, kind) in EXPECTED


@pytest.mark.parametrize("state", [State.HASH, State.UPLOAD, State.FINALIZE, State.LINK])
def test_only_presign_may_call_a_file_a_duplicate(state: State) -> None:
    with pytest.raises(ValueError):
        decide(state, 0, Outcome(OutcomeKind.DUPLICATE), POLICY)


@pytest.mark.parametrize("state", [State.HASH, State.LINK, State.TO_FAILED])
def test_only_the_move_to_done_may_call_a_file_changed_too_often(state: State) -> None:
    with pytest.raises(ValueError):
        decide(state, 0, Outcome(OutcomeKind.CHANGED_TOO_OFTEN), POLICY)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_terminal_states_run_nothing(state: State) -> None:
    with pytest.raises(ValueError):
        decide(state, 0, Outcome.success(), POLICY)


def test_a_file_still_being_written_never_spends_the_budget() -> None:
    decision = decide(State.UPLOAD, POLICY.attempts - 1, Outcome(OutcomeKind.FILE_CHANGED, "grew"), POLICY)
    assert decision.state is State.HASH and decision.attempts == POLICY.attempts - 1
    assert 0 < decision.delay <= 2 * POLICY.backoff


@pytest.mark.parametrize("kind", [OutcomeKind.TRANSIENT, OutcomeKind.EXPIRED])
def test_budget_exhausted_fails_with_last_reason(kind: OutcomeKind) -> None:
    decision = decide(State.UPLOAD, POLICY.attempts - 1, Outcome(kind, "503 Slow Down", 503), POLICY)
    assert decision.state is State.TO_FAILED
    assert decision.error is not None and "503 Slow Down" in decision.error
    assert str(POLICY.attempts) in decision.error


def test_moves_are_never_given_up() -> None:
    decision = decide(State.TO_DONE, 10_000, Outcome(OutcomeKind.TRANSIENT, "read-only"), POLICY, 0.0)
    assert decision.state is State.TO_DONE
    assert decision.delay <= POLICY.max_backoff


def test_a_file_changed_after_many_tries_at_done_s_door_is_sent_again_with_a_whole_budget() -> None:
    """Moves are tried without end; the resend after a change must not inherit those tries, or its
    first transient error would fail a file whose new bytes were never tried (found by hypothesis)."""
    decision = decide(State.TO_DONE, POLICY.attempts + 1, Outcome(OutcomeKind.FILE_CHANGED, "size"), POLICY, 0.0)
    assert decision.state is State.HASH and decision.attempts == 0


def test_retry_after_is_honoured_but_capped() -> None:
    slow = decide(State.PRESIGN, 0, Outcome(OutcomeKind.TRANSIENT, "429", 429, retry_after=30.0), POLICY, 0.0)
    assert slow.delay == 30.0
    huge = decide(State.PRESIGN, 0, Outcome(OutcomeKind.TRANSIENT, "429", 429, retry_after=1e9), POLICY, 0.0)
    assert huge.delay == POLICY.max_backoff


def test_expired_url_goes_back_to_presign_at_once() -> None:
    decision = decide(State.UPLOAD, 0, Outcome(OutcomeKind.EXPIRED, "403 AccessDenied"), POLICY)
    assert (decision.state, decision.delay) == (State.PRESIGN, 0.0)


@given(attempts=st.integers(1, 60), jitter=st.floats(0, 0.999))
def test_backoff_doubles_within_jitter_and_cap(attempts: int, jitter: float) -> None:
    delay = backoff_delay(attempts, POLICY, jitter)
    full = min(POLICY.backoff * 2 ** (attempts - 1), POLICY.max_backoff)
    assert full / 2 <= delay <= full


@given(st.lists(st.sampled_from(list(OutcomeKind)), max_size=60))
def test_any_outcome_sequence_ends_or_stays_bounded(kinds: list[OutcomeKind]) -> None:
    """Whatever happens, a job never skips a vendor step and never exceeds its budget."""
    state, attempts = State.HASH, 0
    for kind in kinds:
        if state in TERMINAL_STATES:
            break
        if kind is OutcomeKind.DUPLICATE and state is not State.PRESIGN:
            continue
        if kind is OutcomeKind.CHANGED_TOO_OFTEN and state is not State.TO_DONE:
            continue
        decision = decide(state, attempts, Outcome(kind, "x"), POLICY, 0.3)
        if kind is OutcomeKind.DUPLICATE:
            assert decision.state is State.TO_DONE
        elif kind is OutcomeKind.SUCCESS:
            assert decision.state is {**dict(zip(VENDOR_STEPS, [*VENDOR_STEPS[1:], State.TO_DONE], strict=True)),
                                      State.TO_DONE: State.DONE, State.TO_FAILED: State.FAILED}[state]
        elif state is State.TO_DONE and decision.state in STEP_ORDER:
            # Only bytes changed after they were sent take a job from done's door back to the start.
            assert kind is OutcomeKind.FILE_CHANGED and decision.state is State.HASH
        elif decision.state in STEP_ORDER:
            # Going back is allowed (presign/hash again); going forward without success is not.
            assert STEP_ORDER.index(decision.state) <= STEP_ORDER.index(state)
        if state not in MOVE_STATES:
            assert decision.attempts <= POLICY.attempts
        state, attempts = decision.state, decision.attempts
