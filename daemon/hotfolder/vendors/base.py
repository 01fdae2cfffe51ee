"""What every vendor adapter speaks: four verbs over one StepContext, and an online check.

An adapter is one small file per vendor. It turns a step into HTTP calls and answers with the
ids it wants remembered (they go to the journal, so they must never be secrets). Presigned
URLs and their headers are secrets: adapters keep them in ``ctx.scratch``, which lives in
memory only. A verb a vendor does not have is simply not overridden: the default is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from hotfolder.config import TargetSettings
from hotfolder.errors import StepError, from_response, from_transport_error, parse_retry_after
from hotfolder.limits import TargetGate
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import FileDigests, FileIdentity, put_presigned

Ids = Mapping[str, Any]
RATE_LIMIT_STATUSES = frozenset({420, 429})  # 420 is SaferMe's "Enhance your calm"


@dataclass
class StepContext:
    job_id: int
    target: str
    record: str | None
    group: str | None
    name: str
    path: Path  # the file in the inbox
    identity: FileIdentity  # size and mtime as hashed: the upload must send exactly these bytes
    digests: FileDigests | None
    ids: Mapping[str, Any]  # what earlier steps returned, as committed in the journal
    scratch: dict[str, Any] = field(default_factory=dict)  # in memory only: presigned URLs, headers
    # Commit ids to the journal *now*, before the side effect that follows (e.g. "about to create
    # the ticket"), so that after a crash the next attempt knows the create may have happened.
    remember: Callable[[Mapping[str, Any]], None] = lambda ids: None

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def template_values(self) -> dict[str, str]:
        """What a name/title/caption template may use (options.TEMPLATE_FIELDS); "" where there is none."""
        return {
            "name": self.name,
            "stem": self.stem,
            "suffix": Path(self.name).suffix,
            "target": self.target,
            "record": self.record or "",
            "group": self.group or "",
        }


class CheckFailed(Exception):
    """What an online check found wrong with a target, as one sentence (the caller names the target)."""


class Vendor:
    """Base adapter: every step verb is a no-op until a vendor overrides it; ``check`` has no default."""

    # A file in a group folder (inbox/<t>/<record>/<group>/) that describes the group instead of
    # being uploaded, e.g. Visibuild's ticket.yaml. None: this vendor has no group folders.
    manifest_name: ClassVar[str | None] = None
    # The digests the hash step must compute for this vendor, all in one read pass.
    digests: ClassVar[tuple[str, ...]] = ("sha256",)

    def __init__(self, target: TargetSettings, client: httpx.Client) -> None:
        self.target = target
        self.client = client
        # Credentials learnt at run time (OAuth access tokens) are reported here; the service points
        # it at the log redactor, which also guards the journal and sidecars. Vendors import no logging.
        self.secret_found: Callable[[str], None] = lambda secret: None
        # Shared by every job of this target: pacing, upload slots, and the pause after a 429/420.
        self.gate = TargetGate(
            target.name,
            requests_per_second=target.max_requests_per_second,
            max_concurrent_uploads=target.max_concurrent_uploads,
        )

    def presign(self, ctx: StepContext) -> Ids:
        return {}

    def upload(self, ctx: StepContext) -> Ids:
        return {}

    def finalize(self, ctx: StepContext) -> Ids:
        return {}

    def link(self, ctx: StepContext) -> Ids:
        return {}

    def combines_links(self, ctx: StepContext) -> bool:
        """Whether ``ctx``'s link may share one write with other links waiting on its link key."""
        return False

    def link_many(self, ctxs: Sequence[StepContext]) -> list[Ids]:
        """Link every one of ``ctxs`` (all :meth:`combines_links`, one link key, one target) in one
        read-modify-write; the ids of each, in order. Called under the link key's lock."""
        raise NotImplementedError(f"{self.target.vendor} does not combine links")

    def link_group(self, ctx: StepContext, members: Sequence[StepContext], manifest: Mapping[str, Any]) -> Ids:
        """Link every member of a group folder at once (called once per group, under its lock).

        ``members`` includes ``ctx``; all of them have finished upload/finalize. The ids returned
        are recorded on every member.
        """
        raise NotImplementedError(f"{self.target.vendor} has no group folders")

    def check(self, record: str | None) -> str:
        """Verify this target online with reads only (``hotfolder check-config --online``): the
        credentials, and that the configured field (entity, report field) exists. ``record`` is a
        record folder of the target found in the inbox, for vendors whose fields can only be read on
        a record; None if there is none. Answers what was verified and what could not be; raises
        CheckFailed (or StepError, from a call) saying what is wrong. Nothing may be created."""
        raise NotImplementedError(f"{self.target.vendor} has no online check")

    def link_key(self, ctx: StepContext) -> tuple[str, ...]:
        """Links sharing a key never run at once (records without optimistic concurrency)."""
        return (self.target.name, ctx.record or "", ctx.group or "")

    # -- helpers for the vendor modules --------------------------------------------------------

    @staticmethod
    def keep_presigned_put(ctx: StepContext, url: str, headers: Mapping[str, Any] | None = None) -> None:
        """Remember a presigned PUT for the upload step, in memory only: its query is a credential."""
        ctx.scratch["put_url"] = url
        ctx.scratch["put_headers"] = {str(name): str(value) for name, value in (headers or {}).items()}

    def upload_presigned_put(self, ctx: StepContext) -> Ids:
        """The upload verb of every presigned-PUT vendor: stream the file to the remembered URL."""
        url = ctx.scratch.get("put_url")
        if not url:
            raise StepError(OutcomeKind.NEED_PRESIGN, "presigned URL not in memory (restart): presign again")
        etag = put_presigned(self.client, url, ctx.scratch.get("put_headers", {}), ctx.path, ctx.identity)
        ctx.scratch.pop("put_url", None)  # single use: a retry of a later step never re-sends
        return {"etag": etag}

    def api_error_detail(self, response: httpx.Response) -> str | None:
        """The vendor's own words for a refusal; vendors override where they put it elsewhere."""
        try:
            body = response.json()
        except ValueError:
            text = response.text.strip()
            return text or None
        return _flatten_errors(body)

    def call(
        self, method: str, url: str, what: str, *, ok: tuple[int, ...] = (200, 201), **kwargs: Any
    ) -> httpx.Response:
        """One API call, paced by the target's gate; trouble and non-``ok`` statuses become StepErrors."""
        self.gate.before_request()
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise from_transport_error(exc, what) from exc
        if response.status_code in RATE_LIMIT_STATUSES:
            # The whole target waits, and this job waits at least as long as the target does.
            pause = self.gate.rate_limited(parse_retry_after(response.headers.get("Retry-After")))
            error = from_response(response, what, self.api_error_detail(response))
            raise StepError(error.kind, str(error), response.status_code, retry_after=pause)
        self.gate.answered()
        if response.status_code not in ok:
            raise from_response(response, what, self.api_error_detail(response))
        return response


def _flatten_errors(body: Any) -> str | None:
    """Turn the common error shapes ({"error": …}, {"x": {"errors": {field: [msgs]}}}) into one line."""
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):
            return body["error"]
        errors = body.get("errors")
        if errors is None:
            for value in body.values():
                if isinstance(value, dict) and "errors" in value:
                    errors = value["errors"]
                    break
        if isinstance(errors, dict):
            parts = []
            for key, messages in errors.items():
                if isinstance(messages, list):
                    messages = ", ".join(str(m) for m in messages)
                parts.append(f"{key} {messages}")
            return "; ".join(parts)
        if errors is not None:
            return str(errors)
    return None


def require(body: Any, *keys: str, what: str) -> Any:
    """Dig ``keys`` out of a JSON answer, or fail with a reason naming what was missing."""
    value = body
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise StepError(OutcomeKind.TRANSIENT, f"{what}: answer lacks '{'.'.join(keys)}'")
        value = value[key]
    return value
