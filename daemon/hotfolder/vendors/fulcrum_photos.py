"""Fulcrum photos, the camera case (``kind: photo``): one multipart POST, then the record's photo field.

API facts (docs/vendors.md, Fulcrum, Photos): no presign and no finalize; the upload is one multipart
``POST /api/v2/photos.json`` whose ``photo[access_key]`` is a UUID we make. That POST is not
idempotent, so the key is made once per job and committed (``ctx.remember``) before the first POST; a
later attempt re-uses it and first asks ``GET /photos/{key}.json`` whether the photo already exists,
adopting it instead of sending a second copy. The link appends ``{"photo_id": key, "caption": …}``
to the photo field (:class:`~hotfolder.vendors.fulcrum_records.FulcrumRecords`). A photo belongs to
a record: the config refuses ``owner: form`` for this kind.
"""

from __future__ import annotations

import mimetypes
import uuid
from typing import Any
from urllib.parse import quote

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import FilePart, MultipartForm, check_unchanged, iter_file, open_checked
from hotfolder.vendors.base import Ids, StepContext, require
from hotfolder.vendors.fulcrum_api import API
from hotfolder.vendors.fulcrum_records import FulcrumRecords

PHOTO_KEY = "photo_access_key"  # the journal id holding the client-made photo access key


class FulcrumPhotos(FulcrumRecords):
    digests = ("sha256",)
    item_id = "photo_id"
    journal_id = PHOTO_KEY
    element_type = "PhotoField"
    field_noun = "a photo"

    def upload(self, ctx: StepContext) -> Ids:
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

    def record_item(self, ctx: StepContext) -> dict[str, Any] | None:
        caption = str(self.target.option("caption") or "").format_map(ctx.template_values())
        return {"photo_id": ctx.ids[PHOTO_KEY], "caption": caption}

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
