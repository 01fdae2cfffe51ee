"""The SaferMe (ThunderMaps) Report API v4 as the daemon meets it: file attachments and reports.

Follows docs/vendors.md (SaferMe) and SaferMe's public API docs (``file_attachments.md``, ``reports.md``):

* every ``/api/v4/`` call needs ``Authorization: Token token=<token>`` (401 otherwise), an ``X-TeamId``
  of a known team (403 otherwise), and non-empty ``X-AppId`` and ``X-InstallationId`` (400 otherwise);
* ``GET /file_attachments/upload_authorization?content_type=…`` refuses types outside
  ``allowed_types`` (422) and answers a presigned POST form for ``/s3/saferme-uploads`` on this server:
  ``fields.key`` is ``async_uploads/<uuid>`` (as the docs show), ``key_prefix`` ends in ``/``, and the
  policy (SigV4, expiring after ``s3.settings.presign_expires``) says bucket, ``starts-with $key
  async_uploads/<uuid>``, ``starts-with $Content-Type ""``, ``success_action_status 201``, plus
  ``content-length-range`` when ``max_file_size`` is set and ``x-amz-security-token`` when
  ``session_token`` is. The POST itself is judged by ``s3.S3PostEndpoint`` (docs/vendors.md, S3);
* ``POST /file_attachments`` ``{"file_attachment": {"key"}}`` → 422 unless the key lies under an issued
  prefix and was uploaded. Every answer about an attachment (the create, then each ``GET
  /file_attachments/<id>``) counts as a read; the first ``processing_polls`` reads answer 202, the rest
  200. A key may be used twice: each create makes a new attachment (an orphan, never a duplicate link);
* ``GET /reports/<id>`` answers the report unwrapped, with ``form_fields`` only when asked for with
  ``?fields=form_fields`` (as the docs say); attachment values are objects ``{"id", "original_url",
  "filename", "style_url"}``, as the docs show them;
* ``PATCH /reports/<id>`` takes ``{"report": {"form_fields": [{"key", "value"}]}}`` (the body wrapped
  in ``report``, as every example in the docs has it; an unwrapped body is 422), replaces only the
  fields named, and answers 204. Refused with 422: an unknown field key; an attachment id that does not
  exist; an id in two fields, or twice in one; a non-image attachment in an ``Image`` field (png, jpeg,
  gif only); an attachment still processing when ``reject_processing_links`` is set (the docs do not
  say whether SaferMe accepts those; by default it does).

Errors are ``{"errors": [...], "failures": {field: [...]}, "error_codes": {field: [...]}}``; rate
limits (420 "Enhance your calm") are played with the sandbox's fault injection. State lives in memory
behind one lock; the blobs are in the S3 store on disk.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .s3 import BlobInfo, S3PostEndpoint, S3Service, presign_post
from .server import BadRequest, Request, Response, Router, json_response

BUCKET = "saferme-uploads"
KEY_ROOT = "async_uploads"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
# FileUpload fields take images, plain text, PDF, MS Office and iWork files (reports.md).
ALLOWED_TYPES = IMAGE_TYPES | frozenset(
    {
        "text/plain",
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.apple.numbers",
        "application/vnd.apple.keynote",
        "application/vnd.apple.pages",
    }
)
ATTACHMENT_FIELD_TYPES = frozenset({"Image", "FileUpload"})
FIRST_ATTACHMENT_ID = 21
_TOKEN = re.compile(r'^Token\s+token="?(?P<token>[^"]+)"?$')


def _errors(status: int, message: str, field: str = "base", code: str = "invalid") -> Response:
    """SaferMe's error shape: a list for people, failures and codes per field for programs."""
    return json_response(
        status, {"errors": [message], "failures": {field: [message]}, "error_codes": {field: [code]}}
    )


@dataclass
class _Authorization:
    prefix: str  # async_uploads/<uuid>
    content_type: str


@dataclass
class _Attachment:
    id: int
    key: str | None  # None for attachments seeded by add_report (no bytes here)
    content_type: str | None
    filename: str | None
    reads: int = 0

    def processing(self, polls: int) -> bool:
        return self.key is not None and self.reads <= polls


class SaferMeService:
    """SaferMe routes under ``/api/v4/`` and the state behind them."""

    def __init__(
        self, s3: S3Service, tokens: Iterable[str] = ("sandbox-saferme-token",), teams: Iterable[str] = ("42",)
    ) -> None:
        self.s3 = s3
        self.tokens: set[str] = set(tokens)
        self.teams: set[str] = set(teams)
        self.base_url = "http://127.0.0.1"  # replaced once the server listens; used when Host is absent
        # Knobs, settable while serving:
        self.processing_polls = 1  # reads of a new attachment that answer 202 before it is processed
        self.allowed_types: set[str] = set(ALLOWED_TYPES)
        self.max_file_size: int | None = None  # adds content-length-range [1, max] to the policy
        self.session_token: str | None = None  # adds an x-amz-security-token field (temporary credentials)
        self.reject_processing_links = False
        self._lock = threading.RLock()
        self._authorizations: dict[str, _Authorization] = {}
        self._attachments: dict[int, _Attachment] = {}
        self._reports: dict[str, dict[str, Any]] = {}
        self._next_id = FIRST_ATTACHMENT_ID
        self._post = S3PostEndpoint(s3)

    # -- Python API (tests and the demo seed and inspect state through these) ----------------------------

    def add_report(
        self, report_id: str | int, form_fields: list[dict[str, Any]] | None = None, title: str = ""
    ) -> None:
        """A report whose ``form_fields`` are ``{"key", "value", "field_type"?}`` (default FileUpload).

        Attachment ids already in a field that this simulator does not know are seeded as processed
        attachments without bytes, so a later PATCH that keeps them is valid."""
        fields = []
        with self._lock:
            for spec in form_fields or []:
                field_type = spec.get("field_type", "FileUpload")
                value = copy.deepcopy(spec.get("value"))
                if field_type in ATTACHMENT_FIELD_TYPES:
                    value = [int(item) for item in value or []]
                    for attachment_id in value:
                        self._attachments.setdefault(attachment_id, _Attachment(attachment_id, None, None, None))
                        self._next_id = max(self._next_id, attachment_id + 1)
                fields.append({"key": spec["key"], "label": spec.get("label", spec["key"]), "field_type": field_type,
                               "value": value})
            self._reports[str(report_id)] = {"id": report_id, "title": title, "form_fields": fields}

    def report(self, report_id: str | int) -> dict[str, Any]:
        """The report as stored: attachment fields hold plain ids."""
        with self._lock:
            return copy.deepcopy(self._reports[str(report_id)])

    def field_value(self, report_id: str | int, key: str) -> Any:
        for field in self.report(report_id)["form_fields"]:
            if field["key"] == key:
                return field["value"]
        raise KeyError(key)

    def file_attachment(self, attachment_id: int) -> dict[str, Any]:
        with self._lock:
            a = self._attachments[int(attachment_id)]
            return {"id": a.id, "key": a.key, "content_type": a.content_type, "filename": a.filename,
                    "reads": a.reads, "processing": a.processing(self.processing_polls)}

    def file_attachments(self) -> list[dict[str, Any]]:
        with self._lock:
            ids = [a.id for a in self._attachments.values() if a.key is not None]
        return [self.file_attachment(attachment_id) for attachment_id in ids]

    def blob(self, attachment_id: int) -> BlobInfo | None:
        with self._lock:
            attachment = self._attachments.get(int(attachment_id))
            key = attachment.key if attachment is not None else None
        return None if key is None else self.s3.store.get(BUCKET, key)

    def blob_bytes(self, file_attachment_id: int) -> bytes:
        blob = self.blob(file_attachment_id)
        if blob is None:
            raise KeyError(f"file attachment {file_attachment_id} has no uploaded bytes")
        return blob.path.read_bytes()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "reports": copy.deepcopy(self._reports),
                "file_attachments": {str(a["id"]): a for a in self.file_attachments()},
                "processing_polls": self.processing_polls,
            }

    def describe(self) -> list[str]:
        lines = ["SaferMe reports (Authorization: Token token=…, X-TeamId one of "
                 f"{', '.join(sorted(self.teams))}):"]
        with self._lock:
            for report in self._reports.values():
                lines.append(f"  {report['id']}  {report['title']}")
                for field in report["form_fields"]:
                    lines.append(f"    [{field['key']}] {field['field_type']}: {field['value']}")
            lines.append("SaferMe file attachments:")
            for a in self._attachments.values():
                if a.key is not None:
                    state = "processing" if a.processing(self.processing_polls) else "processed"
                    lines.append(f"  {a.id}  {a.key}  {a.content_type}  {state}")
        return lines

    # -- routes -----------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        self._post.register(router)
        router.add("GET", r"^/api/v4/file_attachments/upload_authorization$", self._guard(self._authorize))
        router.add("POST", r"^/api/v4/file_attachments$", self._guard(self._create_attachment))
        router.add("GET", r"^/api/v4/file_attachments/(?P<id>[^/]+)$", self._guard(self._show_attachment))
        router.add("GET", r"^/api/v4/reports/(?P<id>[^/]+)$", self._guard(self._show_report))
        router.add("PATCH", r"^/api/v4/reports/(?P<id>[^/]+)$", self._guard(self._patch_report))
        router.add("*", r"^/api/v4/", self._guard(lambda _request: _errors(404, "Not found", code="not_found")))

    def _guard(self, handler: Any) -> Any:
        """Token, team and client headers, and body-parse errors, the same for every route."""

        def guarded(request: Request) -> Response:
            match = _TOKEN.match((request.header("Authorization") or "").strip())
            if match is None or match["token"] not in self.tokens:
                return _errors(401, "Invalid access token", "token", "unauthorized")
            if (request.header("X-TeamId") or "").strip() not in self.teams:
                return _errors(403, "You are not a member of this team", "team_id", "forbidden")
            for header in ("X-AppId", "X-InstallationId"):
                if not (request.header(header) or "").strip():
                    return _errors(400, f"{header} header is required", header, "blank")
            try:
                response: Response = handler(request)
            except BadRequest:
                return _errors(400, "Bad request", code="bad_request")
            return response

        return guarded

    def _base_url(self, request: Request) -> str:
        # The form must reach this same server the way the client did.
        host = request.header("Host")
        return f"http://{host}" if host and re.match(r"^[A-Za-z0-9.\-\[\]:]+$", host) else self.base_url

    # -- file attachments -------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> Response:
        content_type = (parse_qs(request.query_string).get("content_type") or [""])[0].strip().lower()
        if not content_type:
            return _errors(422, "content_type can't be blank", "content_type", "blank")
        if content_type not in self.allowed_types:
            return _errors(422, f"Content type {content_type} is not allowed", "content_type", "not_allowed")
        prefix = f"{KEY_ROOT}/{uuid.uuid4()}"
        conditions: list[object] = [
            ["starts-with", "$key", prefix],
            ["starts-with", "$Content-Type", ""],
            {"success_action_status": "201"},
        ]
        if self.max_file_size is not None:
            conditions.append(["content-length-range", 1, self.max_file_size])
        if self.session_token is not None:
            conditions.append({"x-amz-security-token": self.session_token})
        url, signed = presign_post(
            self.s3, self._base_url(request), BUCKET, conditions, expires=self.s3.settings.presign_expires
        )
        fields = {"key": prefix, "success_action_status": "201", "Content-Type": content_type, **signed}
        if self.session_token is not None:
            fields["x-amz-security-token"] = self.session_token
        with self._lock:
            self._authorizations[prefix] = _Authorization(prefix, content_type)
        return json_response(
            200,
            {
                "upload_authorization": {
                    "method": "POST",
                    "key": prefix,
                    "key_prefix": f"{prefix}/",
                    "url": url,
                    "fields": fields,
                    "required_fields": ["Content-Type", "file"],
                }
            },
        )

    def _create_attachment(self, request: Request) -> Response:
        body = request.json()
        spec = body.get("file_attachment") if isinstance(body, dict) else None
        key = spec.get("key") if isinstance(spec, dict) else None
        if not isinstance(key, str) or not key:
            return _errors(422, "Key can't be blank", "key", "blank")
        with self._lock:
            authorization = self._authorization_for(key)
            if authorization is None:
                return _errors(422, "Key was not issued by an upload authorization", "key", "invalid")
            if self.s3.store.get(BUCKET, key) is None:
                return _errors(422, "File not found: nothing was uploaded with this key", "key", "not_found")
            attachment = _Attachment(self._next_id, key, authorization.content_type, key.rpartition("/")[2])
            self._next_id += 1
            self._attachments[attachment.id] = attachment
            return self._attachment_answer(request, attachment)

    def _authorization_for(self, key: str) -> _Authorization | None:
        root, _, rest = key.partition("/")
        prefix = f"{root}/{rest.partition('/')[0]}"
        authorization = self._authorizations.get(prefix)
        return authorization if authorization is not None and key.startswith(prefix) else None

    def _show_attachment(self, request: Request) -> Response:
        with self._lock:
            attachment_id = _int_or_none(request.params["id"])
            attachment = None if attachment_id is None else self._attachments.get(attachment_id)
            if attachment is None or attachment.key is None:
                return _errors(404, "File attachment not found", "id", "not_found")
            return self._attachment_answer(request, attachment)

    def _attachment_answer(self, request: Request, attachment: _Attachment) -> Response:
        """Counts one read; 202 with an empty body shape while processing, 200 with URLs after."""
        attachment.reads += 1
        processing = attachment.processing(self.processing_polls)
        return json_response(202 if processing else 200, self._attachment_view(request, attachment, processing))

    def _attachment_view(self, request: Request | None, attachment: _Attachment, processing: bool) -> dict[str, Any]:
        url = ""
        if not processing and attachment.key is not None and request is not None:
            url = self.s3.presign(
                "GET", self._base_url(request), BUCKET, attachment.key, expires=self.s3.settings.presign_expires
            )
        return {
            "id": attachment.id,
            "original_url": url,
            "filename": None if processing else attachment.filename,
            "style_url": {},
        }

    # -- reports ----------------------------------------------------------------------------------------

    def _show_report(self, request: Request) -> Response:
        wanted = {
            name.strip()
            for value in parse_qs(request.query_string).get("fields", [])
            for name in value.split(",")
        }
        with self._lock:
            report = self._reports.get(request.params["id"])
            if report is None:
                return _errors(404, "Report not found", "id", "not_found")
            view: dict[str, Any] = {"id": report["id"], "title": report["title"]}
            if "form_fields" in wanted:
                view["form_fields"] = [self._field_view(request, field) for field in report["form_fields"]]
            return json_response(200, view)

    def _field_view(self, request: Request, field: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(field)
        view["editable"] = True
        if field["field_type"] in ATTACHMENT_FIELD_TYPES:
            view["value"] = [
                self._attachment_view(request, self._attachments[attachment_id], False)
                for attachment_id in field["value"]
            ]
        return view

    def _patch_report(self, request: Request) -> Response:
        body = request.json()
        report_body = body.get("report") if isinstance(body, dict) else None
        if not isinstance(report_body, dict):
            return _errors(422, "param is missing or the value is empty: report", "report", "blank")
        updates = report_body.get("form_fields", [])
        if not isinstance(updates, list) or not all(isinstance(u, dict) and "key" in u for u in updates):
            return _errors(422, "form_fields must be a list of {key, value}", "form_fields", "invalid")
        with self._lock:
            report = self._reports.get(request.params["id"])
            if report is None:
                return _errors(404, "Report not found", "id", "not_found")
            fields = {field["key"]: field for field in report["form_fields"]}
            new_values: dict[str, Any] = {}
            for update in updates:
                field = fields.get(update["key"])
                if field is None:
                    return _errors(422, f"Unknown form field {update['key']}", "form_fields", "unknown_field")
                value = update.get("value")
                if field["field_type"] in ATTACHMENT_FIELD_TYPES:
                    checked = self._check_attachment_value(field, value)
                    if isinstance(checked, Response):
                        return checked
                    value = checked
                new_values[field["key"]] = copy.deepcopy(value)
            problem = self._shared_attachment(fields, new_values)
            if problem is not None:
                return problem
            for key, value in new_values.items():
                fields[key]["value"] = value
            if isinstance(report_body.get("title"), str):
                report["title"] = report_body["title"]
        return Response(204)

    def _check_attachment_value(self, field: dict[str, Any], value: Any) -> list[int] | Response:
        if value is None:
            return []
        ids = [_int_or_none(item) for item in value] if isinstance(value, list) else [None]
        key = field["key"]
        if any(item is None for item in ids):
            return _errors(422, f"{key} takes a list of file attachment ids", key, "invalid")
        checked = [item for item in ids if item is not None]
        if len(set(checked)) != len(checked):
            return _errors(422, f"{key}: the same file attachment is listed twice", key, "taken")
        for attachment_id in checked:
            attachment = self._attachments.get(attachment_id)
            if attachment is None:
                return _errors(422, f"File attachment {attachment_id} not found", key, "not_found")
            if self.reject_processing_links and attachment.processing(self.processing_polls):
                return _errors(422, f"File attachment {attachment_id} is still processing", key, "not_ready")
            if (
                field["field_type"] == "Image"
                and attachment.content_type is not None
                and attachment.content_type not in IMAGE_TYPES
            ):
                message = f"File attachment {attachment_id} ({attachment.content_type}) is not an image"
                return _errors(422, message, key, "invalid_content_type")
        return checked

    @staticmethod
    def _shared_attachment(fields: dict[str, dict[str, Any]], new_values: dict[str, Any]) -> Response | None:
        """422 if, after the update, one attachment id sits in two attachment fields."""
        owner: dict[int, str] = {}
        for key, field in fields.items():
            if field["field_type"] not in ATTACHMENT_FIELD_TYPES:
                continue
            for attachment_id in new_values.get(key, field["value"]):
                if attachment_id in owner:
                    message = f"File attachment {attachment_id} is already used by field {owner[attachment_id]}"
                    return _errors(422, message, key, "taken")
                owner[attachment_id] = key
        return None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
