"""SaferMe (ThunderMaps Report API v4): upload authorization → POST form to S3 → file attachment → report field.

API facts (docs/vendors.md, SaferMe; from SaferMe's public docs ``file_attachments.md`` / ``reports.md``):

* every call carries ``Authorization: Token token=<token>``, ``X-AppId``, ``X-TeamId``,
  ``X-InstallationId`` and ``Accept: application/json``; 420 "Enhance your calm" and 429 are rate limits
  (``Vendor.call`` pauses the target and honours Retry-After);
* presign asks ``GET /api/v4/file_attachments/upload_authorization?content_type=<type>``. Not every type
  is allowed: a refusal fails the file with a reason naming the type. The answer (policy, signature:
  secrets) stays in ``ctx.scratch``; the journal only learns the key prefix;
* upload POSTs the form with every field in the order given, ``key`` = ``key_prefix`` + the file's name
  (so SaferMe shows the file's own name), ``Content-Type`` = the type asked for, ``file`` last;
* finalize creates the file attachment from S3's Key. 200 means processed, 202 still processing: the id
  is committed at once (``ctx.remember``) so a restart polls ``GET /file_attachments/<id>`` instead of
  creating a second attachment, and each poll is a PENDING wait (poll_interval, doubled per poll,
  capped) whose counter travels in the StepError's ids, which the runner commits;
* link reads the report with ``?fields=form_fields`` (the field list is only sent when asked for),
  keeps the field's attachment ids (the docs show them as ``{"id", …}`` objects; plain ids are accepted
  too), and writes ``PATCH /api/v4/reports/<id>`` ``{"report": {"form_fields": [{"key", "value"}]}}``:
  wrapped in ``report`` as every write example in the docs is, the field list being the API notes'
  ``form_fields``. PATCH replaces only the fields named, so nothing else on the report is touched. If our
  id is already there (a link that landed before a crash) nothing is written. Links to one report never
  run at once.

Left to chance: a crash between sending the create and committing its answer makes a second, orphan
file attachment on restart (there is no lookup by key); it is never linked, so the report stays right.
"""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from hotfolder import resend
from hotfolder.config import TargetSettings
from hotfolder.errors import StepError, shorten
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import post_form
from hotfolder.vendors.base import CheckFailed, Ids, StepContext, Vendor, require

API = "/api/v4"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
ATTACHMENT_FIELD_TYPES = ("Image", "FileUpload")  # the form field types that hold file attachments
NO_SUCH_REPORT = "0"  # SaferMe's ids are counted from 1: no report has this one
MAX_POLL_WAIT = 60.0  # seconds: the doubling poll interval stops growing here
# Refusals of the upload authorization that are about us, not about the content type.
_NOT_ABOUT_THE_TYPE = frozenset({401, 403, 404})


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or DEFAULT_CONTENT_TYPE


class SaferMe(Vendor):
    digests = ("sha256",)

    def __init__(self, target: TargetSettings, client: httpx.Client) -> None:
        super().__init__(target, client)
        # SaferMe wants an installation id per client install; without one configured, one per daemon
        # run is stable enough (it is not a credential, only how SaferMe tells clients apart).
        self.installation_id: str = target.option("installation_id") or f"hotfolder-{uuid.uuid4()}"

    @property
    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Token token={self.target.option('token')}",
            "X-AppId": self.target.option("app_id"),
            "X-TeamId": self.target.option("team_id"),
            "X-InstallationId": self.installation_id,
            "Accept": "application/json",
        }

    def api_error_detail(self, response: httpx.Response) -> str | None:
        """SaferMe's ``{"errors", "failures", "error_codes"}`` as one line a person can read."""
        try:
            body = response.json()
        except ValueError:
            return super().api_error_detail(response)
        detail = saferme_error_detail(body)
        return detail if detail else super().api_error_detail(response)

    # -- the four verbs -----------------------------------------------------------------------

    def presign(self, ctx: StepContext) -> Ids:
        content_type = content_type_of(ctx.name)
        try:
            answer = self.call(
                "GET",
                f"{API}/file_attachments/upload_authorization",
                "presign",
                params={"content_type": content_type},
                headers=self._headers,
            ).json()
        except StepError as error:
            status = error.outcome.status
            if error.kind is OutcomeKind.PERMANENT and status is not None and status not in _NOT_ABOUT_THE_TYPE:
                reason = f"content type {content_type} refused by SaferMe: {error.outcome.reason}"
                raise StepError(OutcomeKind.PERMANENT, shorten(reason), status) from None
            raise
        authorization = require(answer, "upload_authorization", what="presign")
        fields = require(answer, "upload_authorization", "fields", what="presign")
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise StepError(OutcomeKind.TRANSIENT, "presign: upload_authorization.fields is not a map of text")
        key_prefix = self._key_prefix(authorization, fields)
        ctx.scratch["upload_authorization"] = {
            "url": require(authorization, "url", what="presign"),
            "fields": dict(fields),
            "key_prefix": key_prefix,
            "content_type": content_type,
            "required_fields": list(authorization.get("required_fields") or []),
        }
        return {"upload_key_prefix": key_prefix, "content_type": content_type}

    def upload(self, ctx: StepContext) -> Ids:
        authorization = ctx.scratch.get("upload_authorization")
        if not authorization:
            raise StepError(OutcomeKind.NEED_PRESIGN, "upload authorization not in memory (restart): presign again")
        fields = self._form_fields(ctx, authorization)
        key = post_form(
            self.client,
            authorization["url"],
            fields,
            ctx.path,
            ctx.identity,
            filename=ctx.name,
            content_type=authorization["content_type"],
        )
        ctx.scratch.pop("upload_authorization", None)  # spent: no later step may send it again
        return {"s3_key": key}

    def finalize(self, ctx: StepContext) -> Ids:
        attachment_id = ctx.ids.get("file_attachment_id")
        if attachment_id is None:
            return self._create_attachment(ctx)
        return self._poll_attachment(attachment_id, int(ctx.ids.get("polls") or 0))

    def link(self, ctx: StepContext) -> Ids:
        attachment_id = ctx.ids["file_attachment_id"]
        field_key = self.target.option("field")
        url = _report_url(ctx.record or "")
        report = self._read_report(ctx.record or "", "link: read report").json()
        field = _find_field(report, field_key, f"link: report {ctx.record or ''}")
        if field is None:
            raise StepError(OutcomeKind.PERMANENT, f"link: report {ctx.record} has no form field '{field_key}'")
        current = attachment_ids(field, field_key)
        # A resend's attachment takes the place of the stale copies in the field.
        stale = set(resend.stale_values(ctx.ids, "file_attachment_id"))
        replaced = [str(item) for item in current if str(item) in stale]
        wanted = [item for item in current if str(item) not in stale]
        if not any(str(item) == str(attachment_id) for item in wanted):
            wanted.append(attachment_id)
        if wanted == current:
            return {"linked": True, "link_was_already_there": True}
        form_fields = [{"key": field_key, "value": wanted}]
        # SaferMe's own docs wrap writes in "report" (Rails style); the API notes show form_fields at
        # the top level (docs/vendors.md, SaferMe). Both carry the same value: a Rails server ignores
        # the unwrapped copy, and a server that reads the top level finds it, so either reading links
        # the same ids.
        body = {"report": {"form_fields": form_fields}, "form_fields": form_fields}
        self.call("PATCH", url, "link: write report", ok=(200, 204), json=body, headers=self._headers)
        return {"linked": True, **({resend.REPLACED: replaced} if replaced else {})}

    # -- the online check ---------------------------------------------------------------------

    def check(self, record: str | None) -> str:
        field_key = self.target.option("field")
        if record is None:
            # The token and team are checked before the report is looked up: a report that cannot
            # exist answers 404 when they are accepted, 401/403 when not.
            self._read_report(NO_SUCH_REPORT, "check: look up a report", ok=(200, 404))
            return (f"token and team accepted; field {field_key} not checked: SaferMe shows a report's fields "
                    f"only on a report, and inbox/{self.target.name}/ has no report folder yet")
        response = self._read_report(record, "check: read report", ok=(200, 404))
        if response.status_code == 404:
            raise CheckFailed(f"report {record} (the folder inbox/{self.target.name}/{record}/) was not found")
        field = _find_field(response.json(), field_key, f"check: report {record}")
        if field is None:
            raise CheckFailed(f"report {record} has no form field '{field_key}'")
        kind = field.get("field_type")
        if kind is not None and kind not in ATTACHMENT_FIELD_TYPES:
            raise CheckFailed(f"form field '{field_key}' of report {record} is a {kind} field, not Image or FileUpload")
        return f"token and team accepted; field {field_key} is a {kind or 'file'} field of report {record}"

    # -- helpers ------------------------------------------------------------------------------

    def _read_report(self, report_id: str, what: str, *, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        # The field list is only sent when asked for.
        return self.call("GET", _report_url(report_id), what, ok=ok, params={"fields": "form_fields"},
                         headers=self._headers)

    @staticmethod
    def _key_prefix(authorization: Mapping[str, Any], fields: Mapping[str, str]) -> str:
        prefix = authorization.get("key_prefix")
        if isinstance(prefix, str) and prefix:
            return prefix
        # Without a key_prefix, S3 can still name the object after the file: ${filename}.
        key = fields.get("key", "")
        if key.endswith("${filename}"):
            return key[: -len("${filename}")]
        raise StepError(OutcomeKind.TRANSIENT, "presign: answer lacks 'upload_authorization.key_prefix'")

    @staticmethod
    def _form_fields(ctx: StepContext, authorization: Mapping[str, Any]) -> dict[str, str]:
        """Every field SaferMe gave, in its order, with our key and content type filled in."""
        fields = dict(authorization["fields"])
        fields["key"] = authorization["key_prefix"] + ctx.name
        fields["Content-Type"] = authorization["content_type"]
        for name in authorization["required_fields"]:
            if name != "file" and name not in fields:
                raise StepError(OutcomeKind.PERMANENT, f"upload: SaferMe requires a form field {name!r} we cannot fill")
        return fields

    def _create_attachment(self, ctx: StepContext) -> Ids:
        body = {"file_attachment": {"key": ctx.ids["s3_key"]}}
        response = self.call(
            "POST", f"{API}/file_attachments", "finalize", ok=(200, 201, 202), json=body, headers=self._headers
        )
        attachment_id = require(response.json(), "id", what="finalize")
        if response.status_code != 202:
            return {"file_attachment_id": attachment_id}
        # Committed before waiting: whatever happens next, a restart polls this attachment.
        ctx.remember({"file_attachment_id": attachment_id, "polls": 0})
        raise self._still_processing(attachment_id, 0)

    def _poll_attachment(self, attachment_id: Any, polls: int) -> Ids:
        limit = int(self.target.option("poll_attempts"))
        if polls >= limit:  # poll_attempts lowered since the last poll: no further poll is allowed
            raise self._gave_up(attachment_id, polls)
        response = self.call(
            "GET",
            f"{API}/file_attachments/{quote(str(attachment_id), safe='')}",
            "finalize: poll",
            ok=(200, 202),
            headers=self._headers,
        )
        polls += 1
        if response.status_code == 202 and polls >= limit:
            raise self._gave_up(attachment_id, polls)
        if response.status_code == 202:
            raise self._still_processing(attachment_id, polls)
        return {"file_attachment_id": attachment_id, "polls": polls}

    @staticmethod
    def _gave_up(attachment_id: Any, polls: int) -> StepError:
        return StepError(
            OutcomeKind.PERMANENT,
            f"finalize: SaferMe was still processing file attachment {attachment_id} after {polls} polls; "
            "giving up (raise poll_attempts or poll_interval for slow files)",
            202,
            ids={"file_attachment_id": attachment_id, "polls": polls},
        )

    def _still_processing(self, attachment_id: Any, polls: int) -> StepError:
        """PENDING: wait poll_interval, doubled after each poll, capped; the counter is committed."""
        wait = min(float(self.target.option("poll_interval")) * 2.0**polls, MAX_POLL_WAIT)
        return StepError(
            OutcomeKind.PENDING,
            f"file attachment {attachment_id} still processing (poll {polls} of {self.target.option('poll_attempts')})",
            retry_after=wait,
            ids={"file_attachment_id": attachment_id, "polls": polls},
        )


def _report_url(report_id: str) -> str:
    return f"{API}/reports/{quote(report_id, safe='')}"


def _find_field(report: Any, field_key: str, what: str) -> Mapping[str, Any] | None:
    """The report's form field with this key, or None; unwrapped answers are what the docs show, and a
    ``{"report": {...}}`` wrapper is tolerated."""
    if isinstance(report, dict) and "form_fields" not in report and isinstance(report.get("report"), dict):
        report = report["report"]
    fields = report.get("form_fields") if isinstance(report, dict) else None
    if not isinstance(fields, list):
        raise StepError(OutcomeKind.TRANSIENT, f"{what} answer lacks 'form_fields'")
    for field in fields:
        if isinstance(field, dict) and field.get("key") == field_key:
            return field
    return None


def attachment_ids(field: Mapping[str, Any], field_key: str) -> list[Any]:
    """The ids in an Image/FileUpload field, in order: items are ``{"id", …}`` objects or plain ids."""
    value = field.get("value")
    if value is None:
        return []
    if not isinstance(value, list):
        kind = field.get("field_type") or type(value).__name__
        raise StepError(OutcomeKind.PERMANENT, f"link: form field '{field_key}' ({kind}) does not hold attachments")
    ids = []
    for item in value:
        item_id = item.get("id") if isinstance(item, dict) else item
        if item_id is None or isinstance(item_id, bool | dict | list):
            raise StepError(OutcomeKind.PERMANENT, f"link: form field '{field_key}' holds something not an attachment")
        ids.append(item_id)
    return ids


def saferme_error_detail(body: Any) -> str | None:
    """``{"errors": …, "failures": {field: [msgs]}, "error_codes": {field: [codes]}}`` → one line."""
    if not isinstance(body, dict):
        return None
    parts: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, str):
        parts.append(errors)
    elif isinstance(errors, list):
        parts.extend(str(e) for e in errors if e)
    elif isinstance(errors, dict):
        parts.extend(f"{field} {_join(messages)}" for field, messages in errors.items())
    failures = body.get("failures")
    if isinstance(failures, dict):
        for field, messages in failures.items():
            text = f"{field} {_join(messages)}"
            if not any(_join(messages) in part for part in parts):  # often the same words as errors
                parts.append(text)
    codes = body.get("error_codes")
    if isinstance(codes, dict) and codes:
        parts.append("codes: " + ", ".join(f"{field}={_join(value)}" for field, value in codes.items()))
    return "; ".join(parts) or None


def _join(messages: Any) -> str:
    if isinstance(messages, list):
        return ", ".join(str(m) for m in messages)
    return str(messages)
