"""Fulcrum record attachments: presign → PUT to S3 → finalize → append to the record's field.

API facts (VENDOR-APIS.md §1): ``X-ApiToken`` on every call; ``POST /api/v2/attachments``
answers a presigned S3 PUT URL plus headers to send verbatim; ``POST /attachments/finalize``
confirms the owners; records have no optimistic concurrency, so the link reads the record,
appends our ``{attachment_id, name}`` unless it is already there, and writes the whole
record back, never two links to one record at once (the runner serialises on link_key).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from daemon.errors import StepError
from daemon.pipeline import OutcomeKind
from daemon.transfer import put_presigned
from daemon.vendors.base import Ids, StepContext, Vendor, require

API = "/api/v2"


class Fulcrum(Vendor):
    vendor_name = "fulcrum"
    digests = ("sha256",)

    @property
    def _headers(self) -> dict[str, str]:
        headers = {"X-ApiToken": self.target.option("token"), "Accept": "application/json"}
        if self.target.option("skip_workflows"):
            headers["X-SkipWorkflows"] = "true"
        if self.target.option("skip_webhooks"):
            headers["X-SkipWebhooks"] = "true"
        return headers

    def _owners(self, ctx: StepContext) -> list[dict[str, str]]:
        owner_type = self.target.option("owner") or "record"
        return [{"type": owner_type, "id": ctx.record or ""}]

    def _record_url(self, ctx: StepContext) -> str:
        # Record ids were validated by layout; percent-encode all the same so nothing can
        # escape the path segment.
        return f"{API}/records/{quote(ctx.record or '', safe='')}.json"

    # -- the four verbs -----------------------------------------------------------------------

    def presign(self, ctx: StepContext) -> Ids:
        body = {
            "owners": self._owners(ctx),
            "name": ctx.name,
            "file_size": ctx.identity.size,
            "metadata": {"filename": ctx.name},
        }
        answer = self.call("POST", f"{API}/attachments", "presign", json=body, headers=self._headers).json()
        ctx.scratch["put_url"] = require(answer, "url", what="presign")
        ctx.scratch["put_headers"] = dict(answer.get("headers") or {})
        return {"attachment_id": require(answer, "id", what="presign")}

    def upload(self, ctx: StepContext) -> Ids:
        url = ctx.scratch.get("put_url")
        if not url:
            raise StepError(OutcomeKind.NEED_PRESIGN, "presigned URL not in memory (restart): presign again")
        etag = put_presigned(self.client, url, ctx.scratch.get("put_headers", {}), ctx.path, ctx.identity)
        ctx.scratch.pop("put_url", None)  # single use: a retry of a later step never re-sends
        return {"etag": etag}

    def finalize(self, ctx: StepContext) -> Ids:
        attachment_id = ctx.ids["attachment_id"]
        body = {"id": attachment_id, "owners": self._owners(ctx)}
        try:
            self.call("POST", f"{API}/attachments/finalize", "finalize", json=body, headers=self._headers)
        except StepError as error:
            # A finalize repeated after a crash may be refused because it already happened:
            # ask the vendor before calling it a failure.
            if error.kind is OutcomeKind.PERMANENT and self._attachment_complete(attachment_id):
                return {"finalized": True}
            raise
        return {"finalized": True}

    def link(self, ctx: StepContext) -> Ids:
        attachment_id = ctx.ids["attachment_id"]
        field_key = self.target.option("field")
        answer = self.call("GET", self._record_url(ctx), "link: read record", headers=self._headers).json()
        record: dict[str, Any] = require(answer, "record", what="link: read record")
        form_values = record.get("form_values") or {}
        items = list(form_values.get(field_key) or [])
        if any(isinstance(item, dict) and item.get("attachment_id") == attachment_id for item in items):
            return {"linked": True, "link_was_already_there": True}
        items.append({"attachment_id": attachment_id, "name": ctx.name})
        record["form_values"] = {**form_values, field_key: items}
        self.call("PUT", self._record_url(ctx), "link: write record", json={"record": record}, headers=self._headers)
        return {"linked": True}

    def _attachment_complete(self, attachment_id: str) -> bool:
        try:
            answer = self.call(
                "GET", f"{API}/attachments/{quote(attachment_id, safe='')}", "finalize: check", headers=self._headers
            ).json()
        except StepError:
            return False
        attachment = answer.get("attachment", answer) if isinstance(answer, dict) else {}
        return bool(attachment.get("complete")) or attachment.get("status") == "complete"
