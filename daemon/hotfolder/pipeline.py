"""The job state machine: which step follows which, and what an outcome does to a job.

Theory of operation
-------------------
Every file becomes one job. A job walks the vendor steps in the order of ``STEP_ORDER``
(hash, presign, upload, finalize, link), then one of two outcome moves (``to_done`` or
``to_failed``) and finally rests in a terminal state (``done``, ``failed`` or ``gone``).

The runner performs one side effect (one step) and reports an :class:`Outcome`. The pure
function :func:`decide` turns (state, attempts, outcome) into a :class:`Decision`: the
job's next state, its new attempt count and how long to wait before the next try. The
runner writes that decision to the journal *before* it starts the next side effect.

Nothing outside this module decides transitions, and this module does no I/O: it is
tested exhaustively without disk, network or threads (see tests/test_pipeline.py).

Attempt accounting: ``attempts`` counts the job's setbacks (transient errors, expired or
refused presigned URLs, a file that changed under us). It is never reset by progress, so
loops such as presign → upload → expired → presign are bounded too. Losing an in-memory
presigned URL to a restart is not a setback and costs no attempt, and neither is waiting
(``PENDING``: the vendor is still processing, or a folder's other files are not uploaded yet). The outcome moves are
retried forever (with capped backoff): a file must never be stranded because the
done/ or failed/ folder was briefly unwritable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    HASH = "hash"
    PRESIGN = "presign"
    UPLOAD = "upload"
    FINALIZE = "finalize"
    LINK = "link"
    TO_DONE = "to_done"  # vendor work complete; the file must move to done/
    TO_FAILED = "to_failed"  # given up; the file and its sidecar must move to failed/
    DONE = "done"
    FAILED = "failed"
    GONE = "gone"  # the file disappeared from the inbox before it finished


class OutcomeKind(StrEnum):
    SUCCESS = "success"
    TRANSIENT = "transient"  # connect error, timeout, 5xx, 429/420: try again later
    EXPIRED = "expired"  # the presigned URL was refused (expired or signature): presign again
    NEED_PRESIGN = "need_presign"  # the presigned URL was lost (restart): presign again, no setback
    PERMANENT = "permanent"  # the vendor refused for good (401/403/4xx validation)
    FILE_CHANGED = "file_changed"  # size/mtime/digest differ from what was hashed: hash again
    FILE_GONE = "file_gone"  # the file is no longer in the inbox
    DUPLICATE = "duplicate"  # the same bytes are already attached to this record: straight to done/
    PENDING = "pending"  # not ready yet (vendor still processing, siblings not uploaded): ask again later
    # Changed after its bytes were sent, once more than a resend is allowed: failed/, with the reason.
    CHANGED_TOO_OFTEN = "changed_too_often"


# The vendor steps, in order. A vendor without a step treats it as a no-op.
STEP_ORDER: tuple[State, ...] = (State.HASH, State.PRESIGN, State.UPLOAD, State.FINALIZE, State.LINK)

# Where a successful step leads.
NEXT_ON_SUCCESS: dict[State, State] = {
    State.HASH: State.PRESIGN,
    State.PRESIGN: State.UPLOAD,
    State.UPLOAD: State.FINALIZE,
    State.FINALIZE: State.LINK,
    State.LINK: State.TO_DONE,
    State.TO_DONE: State.DONE,
    State.TO_FAILED: State.FAILED,
}

ACTIVE_STATES: frozenset[State] = frozenset(NEXT_ON_SUCCESS)
TERMINAL_STATES: frozenset[State] = frozenset({State.DONE, State.FAILED, State.GONE})
MOVE_STATES: frozenset[State] = frozenset({State.TO_DONE, State.TO_FAILED})


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""
    status: int | None = None  # the HTTP status that caused it, if any
    retry_after: float | None = None  # seconds, from a Retry-After header

    @classmethod
    def success(cls) -> Outcome:
        return cls(OutcomeKind.SUCCESS)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    backoff: float = 2.0  # seconds before the first retry; doubled each attempt
    max_backoff: float = 600.0


@dataclass(frozen=True)
class Decision:
    state: State
    attempts: int
    delay: float  # seconds to wait before the next step; 0 means go on at once
    error: str | None = None  # the reason a person reads, kept as the job's last error
    status: int | None = None


def backoff_delay(attempts: int, policy: RetryPolicy, jitter: float) -> float:
    """Delay before retry number ``attempts`` (1-based): doubled each time, capped, with jitter.

    ``jitter`` is a number in [0, 1) supplied by the caller, so this stays deterministic;
    it spreads the delay over [50 %, 100 %] of the exponential value so that many jobs
    failing together do not come back together.
    """
    # The exponent is clamped: moves are retried forever and 2.0 ** 1100 overflows a float.
    exponential = policy.backoff * (2.0 ** min(max(attempts - 1, 0), 64))
    capped = min(exponential, policy.max_backoff)
    return capped * (0.5 + 0.5 * jitter)


def _back_to(state: State, earlier: State) -> State:
    """``earlier`` if it precedes ``state`` in the step order, else ``state``: never jump ahead."""
    if STEP_ORDER.index(earlier) < STEP_ORDER.index(state):
        return earlier
    return state


def decide(state: State, attempts: int, outcome: Outcome, policy: RetryPolicy, jitter: float = 0.0) -> Decision:
    """Map one step's outcome to the job's next state. Pure: no I/O, no clock, no randomness."""
    if state not in ACTIVE_STATES:
        raise ValueError(f"job in terminal state {state} has no step to run")
    kind = outcome.kind

    if kind is OutcomeKind.SUCCESS:
        return Decision(NEXT_ON_SUCCESS[state], attempts, 0.0)

    if state is State.TO_DONE and kind is OutcomeKind.FILE_CHANGED:
        # Its bytes changed after they were sent: the vendor holds the earlier version. Never moved to
        # done/ as if nothing happened: the new bytes go out from the hash step, and their link
        # replaces the stale one (the runner has set the ids aside as stale). A new send with a whole
        # budget: tries at done's door (a move that failed) are no setback of the vendor steps, and
        # resends are bounded by their own count (resend.MAX_RESENDS).
        return Decision(State.HASH, 0, policy.backoff * (1 + jitter), outcome.reason)

    if kind is OutcomeKind.CHANGED_TOO_OFTEN:
        if state is not State.TO_DONE:
            raise ValueError("a file changed after it was sent is recognised on the way to done/")
        return Decision(State.TO_FAILED, attempts, 0.0, outcome.reason, outcome.status)

    if kind is OutcomeKind.PENDING:
        # Waiting is not a setback: the adapter bounds its own polling (it counts polls in its ids).
        delay = outcome.retry_after if outcome.retry_after is not None else policy.backoff
        return Decision(state, attempts, max(delay, 0.01), outcome.reason or None)

    if state in MOVE_STATES:
        # Moving to an outcome folder is never given up: the file stays put and we try again.
        tries = attempts + 1
        return Decision(state, tries, backoff_delay(tries, policy, jitter), outcome.reason, outcome.status)

    if kind is OutcomeKind.FILE_GONE:
        return Decision(State.GONE, attempts, 0.0, outcome.reason or "file disappeared from the inbox")

    if kind is OutcomeKind.PERMANENT:
        return Decision(State.TO_FAILED, attempts, 0.0, outcome.reason, outcome.status)

    if kind is OutcomeKind.DUPLICATE:
        if state is not State.PRESIGN:
            raise ValueError("a duplicate is recognised before presign, before anything is sent")
        return Decision(State.TO_DONE, attempts, 0.0)

    if kind is OutcomeKind.NEED_PRESIGN:
        return Decision(_back_to(state, State.PRESIGN), attempts, 0.0)

    if kind is OutcomeKind.FILE_CHANGED:
        # The file is still being written (a network mount's stale attributes let settle pass
        # early): waiting for a writer is not a setback, so no attempt is spent; the wait stays at
        # the first backoff, neither growing nor giving up.
        return Decision(State.HASH, attempts, policy.backoff * (1 + jitter), outcome.reason)

    tries = attempts + 1
    if tries >= policy.attempts:
        reason = f"gave up after {tries} attempts: {outcome.reason}"
        return Decision(State.TO_FAILED, tries, 0.0, reason, outcome.status)

    if kind is OutcomeKind.EXPIRED:
        return Decision(_back_to(state, State.PRESIGN), tries, 0.0, outcome.reason, outcome.status)
    # TRANSIENT: same step again after a backoff, or after the vendor's Retry-After if longer.
    delay = backoff_delay(tries, policy, jitter)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, policy.max_backoff))
    return Decision(state, tries, delay, outcome.reason, outcome.status)
