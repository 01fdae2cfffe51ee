"""EspoCRM: the file goes inline (base64 in JSON) to ``POST Attachment``, then onto the record.

API facts (docs/vendors.md, EspoCRM; checked against ``espocrm/espocrm``):

* API root ``{url}/api/v1/``; ``url`` may carry a sub-folder, which the HTTP client keeps.
* Auth is ``X-Api-Key``, or, with a ``secret``, ``X-Hmac-Authorization: base64(key + ":" +
  hex(HMAC-SHA256(secret, METHOD + " " + resource path)))``. The resource path is what EspoCRM's
  ``Request::getResourcePath()`` returns: the URI path, as sent (percent-encoded), minus the
  base path that ends in ``/api/v1``, so it keeps its leading slash and never has the query:
  ``POST /Attachment``, ``PUT /Document/6630f2``. The hex digest is accepted since EspoCRM 8.4.1;
  older versions wanted the raw 32-byte digest and will answer 401 (bad API key) here.
* Refusals carry their reason in the ``X-Status-Reason`` header, bodies are mostly empty.
* No presign and no finalize. Chunks of a chunked upload are appended with no offset, so a
  resent chunk would corrupt the file: any failure in a chunked upload abandons that attachment
  and the next attempt starts a fresh one (the old ids are kept in ``abandoned_attachment_ids``).
* Linking replaces: ``fileId`` replaces a File field (the previous file is deleted by EspoCRM),
  ``<field>Ids`` replaces an Attachment-Multiple field's whole set, so the current ids are read
  first and sent back with ours. Both links read first and write only if ours is missing, which
  is also what makes a link repeated after a crash harmless.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mimetypes
from typing import Any
from urllib.parse import quote

import httpx

from hotfolder import resend
from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import base64_chunk_body, base64_json_body, check_unchanged, data_uri_prefix, open_checked
from hotfolder.vendors.base import CheckFailed, Ids, StepContext, Vendor, require

API = "/api/v1"
FALLBACK_MIME = "application/octet-stream"
NO_SUCH_RECORD = "0"  # EspoCRM ids are 17 hex digits: no record has this one


class EspoCRM(Vendor):
    digests = ("sha256",)

    # -- requests -------------------------------------------------------------------------------

    def _auth_headers(self, method: str, resource: str) -> dict[str, str]:
        api_key: str = self.target.option("api_key")
        secret: str | None = self.target.option("secret")
        if not secret:
            return {"X-Api-Key": api_key}
        signed = f"{method} {resource}".encode()
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        token = base64.b64encode(f"{api_key}:{digest}".encode()).decode("ascii")
        return {"X-Hmac-Authorization": token}

    def _api(
        self, method: str, resource: str, what: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One call to ``{url}/api/v1{resource}``; ``resource`` is already percent-encoded (it is signed)."""
        all_headers = {"Accept": "application/json", **(headers or {}), **self._auth_headers(method, resource)}
        return self.call(method, API + resource, what, headers=all_headers, **kwargs)

    def api_error_detail(self, response: httpx.Response) -> str | None:
        reason = response.headers.get("X-Status-Reason", "").strip()
        if reason:
            return reason
        if response.status_code == 401:
            # EspoCRM answers bad credentials with an empty 401; say what a person should check.
            return "bad API key" + (" or HMAC secret" if self.target.option("secret") else "")
        return super().api_error_detail(response)

    # -- what to send -----------------------------------------------------------------------------

    @property
    def _entity(self) -> str:
        entity: str = self.target.option("entity")
        return entity

    @property
    def _field(self) -> str:
        field: str = self.target.option("field")
        return field

    @property
    def _multiple(self) -> bool:
        return bool(self.target.option("field_type") == "attachments")

    def _record_resource(self, record: str) -> str:
        return f"/{quote(self._entity, safe='')}/{quote(record, safe='')}"

    def _attachment_meta(self, ctx: StepContext, mime: str) -> dict[str, Any]:
        # A File field names its entity as relatedType, an Attachment-Multiple field as parentType:
        # EspoCRM checks the field against that entity and applies its rules (e.g. file types).
        owner = "parentType" if self._multiple else "relatedType"
        return {"name": ctx.name, "type": mime, "role": "Attachment", owner: self._entity, "field": self._field}

    # -- the verbs ----------------------------------------------------------------------------------

    def upload(self, ctx: StepContext) -> Ids:
        abandoned = _abandoned(ctx.ids)
        mime = mimetypes.guess_type(ctx.name)[0] or FALLBACK_MIME
        threshold: int = self.target.option("chunk_threshold")
        if ctx.identity.size > threshold:
            ids = self._upload_chunked(ctx, mime, abandoned)
        else:
            ids = self._upload_inline(ctx, mime)
        if abandoned:
            ids["abandoned_attachment_ids"] = abandoned
        return ids

    def _upload_inline(self, ctx: StepContext, mime: str) -> dict[str, Any]:
        body, length = base64_json_body(
            _json_head(self._attachment_meta(ctx, mime), "file", data_uri_prefix(mime)),
            ctx.path,
            ctx.identity,
            b'"}',
        )
        headers = {"Content-Type": "application/json", "Content-Length": str(length)}
        answer = self._api("POST", "/Attachment", "upload", content=body, headers=headers).json()
        # The body was built from the file as hashed; a file rewritten while it was sent must not
        # be linked: the next attempt hashes again and uploads a fresh attachment.
        attachment_id = str(require(answer, "id", what="upload"))
        check_unchanged(ctx.path, ctx.identity)
        return {"attachment_id": attachment_id, "chunked": False}

    def _upload_chunked(self, ctx: StepContext, mime: str, abandoned: list[str]) -> dict[str, Any]:
        size = ctx.identity.size
        meta = {**self._attachment_meta(ctx, mime), "isBeingUploaded": True, "size": size}
        check_unchanged(ctx.path, ctx.identity)  # before creating anything at the vendor
        answer = self._api("POST", "/Attachment", "upload: create", json=meta).json()
        attachment_id = str(require(answer, "id", what="upload: create"))
        # Journal first: if anything below fails (or we die), the next attempt sees this id and
        # abandons it instead of appending to a half-written file.
        ctx.remember({"attachment_id": attachment_id, "chunked": True, "abandoned_attachment_ids": abandoned})
        chunk_size: int = self.target.option("chunk_size")
        resource = f"/Attachment/chunk/{quote(attachment_id, safe='')}"
        chunks = 0
        with open_checked(ctx.path, ctx.identity) as f:
            for offset in range(0, size, chunk_size):
                body, length = base64_chunk_body(f, min(chunk_size, size - offset), mime)
                headers = {"Content-Type": "text/plain", "Content-Length": str(length)}
                chunks += 1
                self._api("POST", resource, f"upload: chunk {chunks}", content=body, headers=headers)
        check_unchanged(ctx.path, ctx.identity)
        return {"attachment_id": attachment_id, "chunked": True, "chunks": chunks}

    def link(self, ctx: StepContext) -> Ids:
        """Point the record's field at our attachment; a resend's takes the place of the stale ones.

        A File field holds one attachment, so writing ours replaces whatever it held; an
        Attachment-Multiple field is a set of ids, from which the stale copies are taken out.
        """
        attachment_id = str(ctx.ids["attachment_id"])
        stale = resend.stale_values(ctx.ids, "attachment_id")
        resource = self._record_resource(ctx.record or "")
        record = self._api("GET", resource, "link: read record").json()
        if not isinstance(record, dict):
            raise StepError(OutcomeKind.TRANSIENT, "link: read record: answer is not a record")
        replaced: list[str] = []
        if self._multiple:
            change, replaced = _merged_attachments(record, self._field, attachment_id, stale)
        else:
            held = record.get(f"{self._field}Id")
            change = None if held == attachment_id else {f"{self._field}Id": attachment_id}
            replaced = [str(held)] if change is not None and held is not None and str(held) in stale else []
        if change is None:
            return {"linked": True, "link_was_already_there": True}
        self._api("PUT", resource, "link: write record", json=change)
        return {"linked": True, **({resend.REPLACED: replaced} if replaced else {})}


    # -- the online check ---------------------------------------------------------------------------

    def check(self, record: str | None) -> str:
        where = f"{self._entity}.{self._field}"
        if record is None:
            # Credentials are checked before the record is looked up: a record that cannot exist
            # answers 404 when they are accepted, 401 when not.
            self._api("GET", self._record_resource(NO_SUCH_RECORD), "check: look up a record", ok=(200, 404))
            return (f"API key accepted; {where} not checked: EspoCRM shows a record's attributes only on a "
                    f"record, and inbox/{self.target.name}/ has no record folder yet")
        response = self._api("GET", self._record_resource(record), "check: read record", ok=(200, 404))
        if response.status_code == 404:
            raise CheckFailed(f"no {self._entity} {record} (the folder inbox/{self.target.name}/{record}/): "
                              "the entity or the record id is wrong")
        attributes = response.json()
        single, multiple = f"{self._field}Id", f"{self._field}Ids"
        wanted, other = (multiple, single) if self._multiple else (single, multiple)
        if isinstance(attributes, dict) and wanted in attributes:
            return f"API key accepted; {self._entity} {record} has {wanted}, so {where} holds files"
        if isinstance(attributes, dict) and other in attributes:
            kind = "a File" if other == single else "an Attachment-Multiple"
            right = "file" if other == single else "attachments"
            raise CheckFailed(f"{where} is {kind} field ({self._entity} {record} has {other}): "
                              f"field_type should be {right}")
        raise CheckFailed(f"{where} is not a field that holds files ({self._entity} {record} has no {wanted})")


def _abandoned(ids: Ids) -> list[str]:
    """Attachments earlier attempts created: an upload step that runs again never reuses them."""
    abandoned = [str(item) for item in ids.get("abandoned_attachment_ids") or []]
    previous = ids.get("attachment_id")
    if previous and str(previous) not in abandoned:
        abandoned.append(str(previous))
    return abandoned


def _json_head(members: dict[str, Any], key: str, opening: bytes) -> bytes:
    """``{…members…, "<key>": "<opening>``: a JSON object left open inside its last string."""
    head = json.dumps(members)[:-1]  # drop the closing brace
    separator = ", " if members else ""
    return f"{head}{separator}{json.dumps(key)}: ".encode() + json.dumps(opening.decode("ascii"))[:-1].encode()


def _merged_attachments(
    record: dict[str, Any], field: str, attachment_id: str, stale: list[str]
) -> tuple[dict[str, Any] | None, list[str]]:
    """The ``<field>Ids`` to write so ours is there and no stale copy is (None if it is so already),
    and the stale ids taken out."""
    key = f"{field}Ids"
    if key not in record:
        # Writing the set blind would unlink whatever the record holds: refuse instead.
        raise StepError(
            OutcomeKind.PERMANENT, f"link: the record has no '{key}' (is '{field}' an Attachment-Multiple field?)"
        )
    current = [str(item) for item in record.get(key) or []]
    replaced = [item for item in current if item in stale]
    wanted = [item for item in current if item not in stale]
    if attachment_id not in wanted:
        wanted.append(attachment_id)
    if wanted == current:
        return None, []
    return {key: wanted}, replaced
