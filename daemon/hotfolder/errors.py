"""Errors as values: every failure a step meets becomes a :class:`StepError` carrying an Outcome.

Vendors and transfer raise ``StepError``; the runner catches it and hands ``error.outcome``
to ``pipeline.decide``. The helpers below classify HTTP answers the same way for every
vendor, so a 503 from Fulcrum and a 503 from EspoCRM mean the same thing to the pipeline.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hotfolder.pipeline import Outcome, OutcomeKind

if TYPE_CHECKING:  # the helpers only read httpx's objects; check-config must not pay for importing it
    import httpx

# Statuses that mean "not now": server trouble and rate limits (420 is SaferMe's "Enhance your calm").
TRANSIENT_STATUSES = frozenset({408, 420, 425, 429, 500, 502, 503, 504})
MAX_REASON_CHARS = 500


class StepError(Exception):
    """A step failed; ``outcome`` says what that means for the job."""

    def __init__(
        self,
        kind: OutcomeKind,
        reason: str,
        status: int | None = None,
        retry_after: float | None = None,
        ids: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.outcome = Outcome(kind, reason, status, retry_after)
        # Ids to remember even though the step did not succeed (e.g. a poll counter, or the
        # fact that a create was attempted): the runner commits them with the decision.
        self.ids: Mapping[str, Any] = ids or {}

    @property
    def kind(self) -> OutcomeKind:
        return self.outcome.kind


class ConfigError(Exception):
    """The configuration is unusable; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def from_transport_error(exc: httpx.TransportError, what: str) -> StepError:
    """Connection refused/reset, timeouts and protocol errors are all worth another try.

    The message never includes the request URL, which may carry a presigned signature.
    """
    return StepError(OutcomeKind.TRANSIENT, f"{what}: {type(exc).__name__}: {exc}")


def from_response(response: httpx.Response, what: str, detail: str | None = None) -> StepError:
    """Classify a vendor API's non-success answer (not S3's: see transfer.classify_s3_error)."""
    status = response.status_code
    reason = f"{what}: HTTP {status}"
    if detail:
        reason += f": {shorten(detail)}"
    if status in TRANSIENT_STATUSES:
        return StepError(
            OutcomeKind.TRANSIENT, reason, status, parse_retry_after(response.headers.get("Retry-After"))
        )
    return StepError(OutcomeKind.PERMANENT, reason, status)
