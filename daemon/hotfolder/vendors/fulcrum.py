"""Fulcrum attachments on records and forms: presign → PUT to S3 → finalize → link.

API facts (docs/vendors.md, Fulcrum): ``POST /api/v2/attachments`` answers a presigned S3 PUT URL
plus headers to send verbatim; ``POST /attachments/finalize`` confirms the owners. The link appends
``{"attachment_id", "name"}`` to the record's field (:class:`~hotfolder.vendors.fulcrum_records.FulcrumRecords`).

``owner: form`` (``inbox/<target>/<form-id>/<file>``): the attachment is owned by the form and
finalized with it. There is no record to write, so the link step only asks the vendor whether the
attachment is complete: a finalize that did not take is caught here, not by a user later.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

import httpx

from hotfolder import resend
from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.vendors.base import Ids, StepContext, require
from hotfolder.vendors.fulcrum_api import API
from hotfolder.vendors.fulcrum_records import FulcrumRecords


class FulcrumAttachments(FulcrumRecords):
    digests = ("sha256",)
    item_id = "attachment_id"
    journal_id = "attachment_id"
    element_type = "AttachmentField"
    field_noun = "an attachment"

    @property
    def _owner_type(self) -> str:
        return str(self.target.option("owner") or "record")

    def _owners(self, ctx: StepContext) -> list[dict[str, str]]:
        return [{"type": self._owner_type, "id": ctx.record or ""}]

    # -- the four verbs -----------------------------------------------------------------------

    def presign(self, ctx: StepContext) -> Ids:
        body = {
            "owners": self._owners(ctx),
            "name": ctx.name,
            "file_size": ctx.identity.size,
            "metadata": {"filename": ctx.name},
        }
        answer = self.call("POST", f"{API}/attachments", "presign", json=body, headers=self._headers).json()
        self.keep_presigned_put(ctx, require(answer, "url", what="presign"), answer.get("headers"))
        return {"attachment_id": require(answer, "id", what="presign")}

    def upload(self, ctx: StepContext) -> Ids:
        return self.upload_presigned_put(ctx)

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

    def record_item(self, ctx: StepContext) -> dict[str, Any] | None:
        if self._owner_type == "form":
            return None  # form-owned attachments have no record to write
        return {"attachment_id": ctx.ids["attachment_id"], "name": ctx.name}

    def link(self, ctx: StepContext) -> Ids:
        if self._owner_type == "form":
            return self._confirm_form_attachment(ctx, ctx.ids["attachment_id"])
        return super().link(ctx)

    # -- linking ------------------------------------------------------------------------------

    def _earlier_link(self, ctx: StepContext, items: list[Any]) -> Ids | None:
        # A job that lost its journal (reset after damage) comes back with a fresh attachment id:
        # the same name with the same bytes on the record is then that earlier link, not a new one.
        twin = self._same_file_on_record(ctx, items)
        return None if twin is None else {"matched_attachment_id": twin}

    def _same_file_on_record(self, ctx: StepContext, items: list[Any]) -> str | None:
        """The id of an attachment in ``items`` with our name, size and SHA-256, or None.

        Only items with our name are looked at, so the usual cost is nothing; a candidate of our size
        is downloaded (its presigned URL, without our token) and hashed to be sure it is our file.
        """
        if ctx.digests is None or not ctx.digests.sha256:
            return None
        for existing in items:
            if not isinstance(existing, dict) or existing.get("name") != ctx.name or not existing.get("attachment_id"):
                continue
            candidate = str(existing["attachment_id"])
            try:
                answer = self.call("GET", f"{API}/attachments/{quote(candidate, safe='')}", "link: check attachment",
                                   headers=self._headers).json()
            except StepError as error:
                if error.kind is OutcomeKind.PERMANENT:
                    continue  # not ours to read (gone, another owner): not our file
                raise
            attachment = answer.get("attachment", answer) if isinstance(answer, dict) else {}
            url = attachment.get("url")
            if attachment.get("file_size") != ctx.identity.size or not isinstance(url, str) or not url:
                continue
            digest = hashlib.sha256()
            try:
                with self.client.stream("GET", url) as response:
                    if response.status_code != 200:
                        continue
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
            except httpx.TransportError as exc:
                raise StepError(OutcomeKind.TRANSIENT, f"link: check attachment {candidate}: {exc}") from exc
            if digest.hexdigest() == ctx.digests.sha256:
                return candidate
        return None

    def _confirm_form_attachment(self, ctx: StepContext, attachment_id: str) -> Ids:
        """Form-owned attachments have no record to write: check that finalize took, and stop there.

        A resend cannot take a stale copy off a form (no documented call does), so it is named."""
        if self._attachment_complete(attachment_id):
            stale = resend.stale_values(ctx.ids, "attachment_id")
            return {"attachment_complete": True, **({resend.STALE_KEPT: stale} if stale else {})}
        # Transient, so a vendor that completes asynchronously gets a few tries; bounded by `retry`.
        raise StepError(OutcomeKind.TRANSIENT, f"link: attachment {attachment_id} is not complete after finalize")

    def _attachment_complete(self, attachment_id: str) -> bool:
        try:
            answer = self.call(
                "GET", f"{API}/attachments/{quote(attachment_id, safe='')}", "finalize: check", headers=self._headers
            ).json()
        except StepError:
            return False
        attachment = answer.get("attachment", answer) if isinstance(answer, dict) else {}
        return bool(attachment.get("complete")) or attachment.get("status") == "complete"
