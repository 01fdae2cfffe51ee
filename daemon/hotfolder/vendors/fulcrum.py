"""Fulcrum files on records and forms: attachments (presign → PUT to S3 → finalize → link) and photos.

API facts (docs/vendors.md, Fulcrum): ``X-ApiToken`` on every call; ``POST /api/v2/attachments``
answers a presigned S3 PUT URL plus headers to send verbatim; ``POST /attachments/finalize``
confirms the owners; records have no optimistic concurrency, so the link reads the record,
appends our item unless it is already there, and writes the whole record back, never two
links to one record at once (the runner serialises on link_key).

What the target's options change:

* ``owner: form`` (``inbox/<target>/<form-id>/<file>``): the attachment is owned by the form and
  finalized with it. There is no record to write, so the link step only asks the vendor whether
  the attachment is complete: a finalize that did not take is caught here, not by a user later.
* ``kind: photo`` (``inbox/<target>/<record-id>/<photo>``, owner record only): no presign and no
  finalize; the upload is one multipart ``POST /api/v2/photos.json`` whose ``photo[access_key]`` is
  a UUID we make. That POST is not idempotent, so the key is made once per job and committed
  (``ctx.remember``) before the first POST; a later attempt re-uses it and first asks
  ``GET /photos/{key}.json`` whether the photo already exists, adopting it instead of sending a
  second copy. The link appends ``{"photo_id": key, "caption": …}`` to the photo field.
"""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from hotfolder import resend
from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import FilePart, MultipartForm, check_unchanged, iter_file, open_checked
from hotfolder.vendors.base import Ids, StepContext, Vendor, require

API = "/api/v2"
PHOTO_KEY = "photo_access_key"  # the journal id holding the client-made photo access key


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

    @property
    def _is_photo(self) -> bool:
        return self.target.option("kind") == "photo"

    @property
    def _owner_type(self) -> str:
        return str(self.target.option("owner") or "record")

    def _owners(self, ctx: StepContext) -> list[dict[str, str]]:
        return [{"type": self._owner_type, "id": ctx.record or ""}]

    def _record_url(self, ctx: StepContext) -> str:
        # Record ids were validated by layout; percent-encode all the same so nothing can
        # escape the path segment.
        return f"{API}/records/{quote(ctx.record or '', safe='')}.json"

    # -- the four verbs -----------------------------------------------------------------------

    def presign(self, ctx: StepContext) -> Ids:
        if self._is_photo:
            if self._owner_type != "record":
                # A photo lives in a record's photo field; a form has nowhere to hold one.
                raise StepError(OutcomeKind.PERMANENT, "kind: photo needs owner: record (a form holds no photos)")
            return {}  # photos are sent to the API itself in the upload step: nothing to presign
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
        if self._is_photo:
            return self._upload_photo(ctx)
        return self.upload_presigned_put(ctx)

    def finalize(self, ctx: StepContext) -> Ids:
        if self._is_photo:
            return {}  # a photo is complete once its POST is answered
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
        if self._is_photo:
            item = {"photo_id": ctx.ids[PHOTO_KEY], "caption": self._caption(ctx)}
            return self._append_to_record(ctx, item, "photo_id")
        attachment_id = ctx.ids["attachment_id"]
        if self._owner_type == "form":
            return self._confirm_form_attachment(ctx, attachment_id)
        return self._append_to_record(ctx, {"attachment_id": attachment_id, "name": ctx.name}, "attachment_id")

    # -- linking ------------------------------------------------------------------------------

    def link_key(self, ctx: StepContext) -> tuple[str, ...]:
        """One lock per record of the account, not per target: an attachments target and a camera
        target may append to the same record, and two read-modify-writes at once lose one append."""
        return ("fulcrum-record", self.target.url, ctx.record or "")

    def _append_to_record(self, ctx: StepContext, item: dict[str, Any], id_key: str) -> Ids:
        """Put ``item`` in the record's field unless an item with the same ``id_key`` is there.

        A resend's item takes the place of the stale copies (the earlier sends' ids under
        ``id_key``), so the field ends with the new bytes once. The whole record goes back with PUT:
        PATCH would do too, but PUT is what the vendor's own example uses, and both replace the
        field's whole array anyway.
        """
        field_key = self.target.option("field")
        answer = self.call("GET", self._record_url(ctx), "link: read record", headers=self._headers).json()
        record: dict[str, Any] = require(answer, "record", what="link: read record")
        form_values = record.get("form_values") or {}
        items = list(form_values.get(field_key) or [])
        stale = set(resend.stale_values(ctx.ids, id_key if id_key == "attachment_id" else PHOTO_KEY))
        kept = [existing for existing in items if not _holds(existing, id_key, stale)]
        replaced = sorted({str(existing[id_key]) for existing in items if _holds(existing, id_key, stale)})
        done = {resend.REPLACED: replaced} if replaced else {}
        ours = any(isinstance(existing, dict) and existing.get(id_key) == item[id_key] for existing in kept)
        if ours and not replaced:
            return {"linked": True, "link_was_already_there": True}
        if not ours and id_key == "attachment_id" and not stale:
            # A job that lost its journal (reset after damage) comes back with a fresh attachment id:
            # the same name with the same bytes on the record is then that earlier link, not a new one.
            twin = self._same_file_on_record(ctx, items)
            if twin is not None:
                return {"linked": True, "link_was_already_there": True, "matched_attachment_id": twin}
        if not ours:
            kept.append(item)
        record["form_values"] = {**form_values, field_key: kept}
        self.call("PUT", self._record_url(ctx), "link: write record", json={"record": record}, headers=self._headers)
        return {"linked": True, **done}

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

    def _caption(self, ctx: StepContext) -> str:
        template = str(self.target.option("caption") or "")
        return template.format_map(ctx.template_values())

    def _attachment_complete(self, attachment_id: str) -> bool:
        try:
            answer = self.call(
                "GET", f"{API}/attachments/{quote(attachment_id, safe='')}", "finalize: check", headers=self._headers
            ).json()
        except StepError:
            return False
        attachment = answer.get("attachment", answer) if isinstance(answer, dict) else {}
        return bool(attachment.get("complete")) or attachment.get("status") == "complete"

    # -- photos -------------------------------------------------------------------------------

    def _upload_photo(self, ctx: StepContext) -> Ids:
        access_key = ctx.ids.get(PHOTO_KEY)
        if access_key:
            # An earlier attempt may have created the photo (its answer lost to a crash or a reset).
            if self._photo_exists(access_key, ctx):
                return {"photo_uploaded": True, "photo_adopted": True}
        else:
            access_key = str(uuid.uuid4())
            ctx.remember({PHOTO_KEY: access_key})  # durable before the POST that uses it
        try:
            self._post_photo(ctx, access_key)
        except StepError as error:
            # 422 "access_key has already been taken": an earlier POST did land after all.
            if error.outcome.status == 422 and self._photo_exists(access_key, ctx):
                return {"photo_uploaded": True, "photo_adopted": True}
            raise
        return {"photo_uploaded": True}

    def _photo_exists(self, access_key: str, ctx: StepContext) -> bool:
        """True if the vendor holds a photo under our key with our file's size (when it says a size)."""
        url = f"{API}/photos/{quote(access_key, safe='')}.json"
        answer = self.call("GET", url, "upload: check photo", ok=(200, 404), headers=self._headers)
        if answer.status_code == 404:
            return False
        photo = require(answer.json(), "photo", what="upload: check photo")
        size = photo.get("file_size")
        if isinstance(size, int) and size != ctx.identity.size:
            # Our key, other bytes: a POST of a file that changed mid-way. Never adopt it.
            raise StepError(
                OutcomeKind.PERMANENT,
                f"upload: photo {access_key} exists with {size} bytes, the file has {ctx.identity.size}",
            )
        return True

    def _post_photo(self, ctx: StepContext, access_key: str) -> None:
        """One multipart POST: the access key, then the file, exactly the hashed bytes streamed from disk.

        Framed by :class:`~hotfolder.transfer.MultipartForm`, not httpx's ``files=``, which measures the
        file as it is when the request is built, not as hashed, and reads it to its end.
        """
        content_type = mimetypes.guess_type(ctx.name)[0] or "application/octet-stream"
        form = MultipartForm(
            [("photo[access_key]", access_key), FilePart("photo[file]", ctx.name, content_type, ctx.identity.size)]
        )
        headers = {**self._headers, "Content-Type": form.content_type, "Content-Length": str(form.length)}
        check_unchanged(ctx.path, ctx.identity)
        with open_checked(ctx.path, ctx.identity) as f:
            body = form.body(iter_file(f, ctx.identity.size))
            self.call("POST", f"{API}/photos.json", "upload: post photo", content=body, headers=headers)
        try:
            check_unchanged(ctx.path, ctx.identity)
        except StepError as error:
            # The vendor now holds bytes that may be a mix of old and new: forget this key, so the
            # next upload (after hashing again) creates a fresh photo rather than adopting this one.
            raise StepError(error.kind, error.outcome.reason, ids={PHOTO_KEY: None}) from None


def _holds(item: Any, id_key: str, ids: set[str]) -> bool:
    return isinstance(item, dict) and item.get(id_key) is not None and str(item[id_key]) in ids
