"""The Fulcrum API v2 as the daemon meets it: attachments (presign, finalize, check) and records.

Follows VENDOR-APIS.md §1. Behaviours worth knowing when reading a test against it:

* presign rejects unknown top-level keys (422 naming the key), like the real endpoint;
* the presigned URL points at this server's ``/s3/fulcrum-attachments/<id>/<name>``; a successful PUT
  there marks the attachment uploaded (via an S3 listener), finalize then marks it complete;
* record writes have no optimistic concurrency: PUT replaces the whole record (fields left out are
  dropped), PATCH replaces only the ``form_values`` keys it names, and both bump ``version``;
* a record write that references an attachment id which does not exist, or is not owned by that record,
  is refused with 422, so a daemon that links before presigning (or links to the wrong record) is caught.

State lives in memory, behind one lock; the blobs are in the S3 store on disk.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .s3 import BlobInfo, S3Service
from .server import BadRequest, Request, Response, Router, json_response

BUCKET = "fulcrum-attachments"
PRESIGN_KEYS = frozenset({"owners", "name", "file_size", "metadata"})
READ_ONLY_RECORD_KEYS = frozenset({"id", "form_id", "version", "created_at", "updated_at"})
OWNER_REQUIRED = "At least one owner type and owner ID is required"
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bad_request() -> Response:
    return json_response(400, {"error": "Bad Request", "status": 400})


def _not_found() -> Response:
    return json_response(404, {"error": "Not Found"})


def _unprocessable(message: str) -> Response:
    return json_response(422, {"error": message})


@dataclass
class _Attachment:
    id: str
    name: str
    owners: list[dict[str, str]]
    file_size: int | None
    metadata: dict[str, Any]
    key: str
    created_at: str
    uploaded_at: str | None = None
    size: int | None = None
    md5: str | None = None
    finalized_at: str | None = None

    def public(self) -> dict[str, Any]:
        """The Python-facing view used by tests (``Sandbox.fulcrum.attachment``)."""
        return {
            "id": self.id,
            "name": self.name,
            "owners": copy.deepcopy(self.owners),
            "file_size": self.file_size,
            "metadata": copy.deepcopy(self.metadata),
            "uploaded": self.uploaded_at is not None,
            "uploaded_at": self.uploaded_at,
            "finalized": self.finalized_at is not None,
            "size": self.size,
            "md5": self.md5,
            "etag": f'"{self.md5}"' if self.md5 else None,
            "key": self.key,
            "created_at": self.created_at,
        }


class FulcrumService:
    """Fulcrum routes under ``/api/v2/`` and the state behind them."""

    def __init__(self, s3: S3Service, tokens: Iterable[str] = ("sandbox-token",)) -> None:
        self._s3 = s3
        self.tokens = frozenset(tokens)
        self.base_url = "http://127.0.0.1"  # replaced once the server listens; used when Host is absent
        self._lock = threading.RLock()
        self._forms: set[str] = set()
        self._records: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, _Attachment] = {}
        self._by_key: dict[str, str] = {}
        s3.add_listener(self._on_upload)

    # -- Python API (tests and the demo seed state and look at it through these) ------------------------

    def add_form(self, form_id: str) -> None:
        with self._lock:
            self._forms.add(form_id)

    def add_record(
        self, record_id: str, form_id: str = "form-1", form_values: dict[str, Any] | None = None
    ) -> None:
        now = _now()
        with self._lock:
            self._forms.add(form_id)
            self._records[record_id] = {
                "id": record_id,
                "form_id": form_id,
                "form_values": copy.deepcopy(form_values or {}),
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }

    def record(self, record_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._records[record_id])

    def attachment(self, attachment_id: str) -> dict[str, Any]:
        with self._lock:
            return self._attachments[attachment_id].public()

    def attachments(self) -> list[dict[str, Any]]:
        with self._lock:
            return [attachment.public() for attachment in self._attachments.values()]

    def attachment_blob(self, attachment_id: str) -> BlobInfo | None:
        with self._lock:
            attachment = self._attachments.get(attachment_id)
            key = attachment.key if attachment is not None else None
        return None if key is None else self._s3.store.get(BUCKET, key)

    def attachment_bytes(self, attachment_id: str) -> bytes:
        blob = self.attachment_blob(attachment_id)
        if blob is None:
            raise KeyError(f"attachment {attachment_id} has no uploaded bytes")
        return blob.path.read_bytes()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "forms": sorted(self._forms),
                "records": copy.deepcopy(self._records),
                "attachments": {a.id: a.public() for a in self._attachments.values()},
            }

    def describe(self) -> list[str]:
        lines = ["Fulcrum records:"]
        with self._lock:
            for record in self._records.values():
                lines.append(f"  {record['id']}  form {record['form_id']}  version {record['version']}")
                for field_key, value in record["form_values"].items():
                    for item in value if isinstance(value, list) else []:
                        if isinstance(item, dict) and "attachment_id" in item:
                            name, linked = item.get("name", ""), item["attachment_id"]
                            lines.append(f"    [{field_key}] {name}  ({linked})")
            lines.append("Fulcrum attachments:")
            for a in self._attachments.values():
                status = "complete" if a.finalized_at else ("uploaded" if a.uploaded_at else "pending")
                lines.append(f"  {a.id}  {a.name}  {a.size if a.size is not None else '-'} bytes  {status}")
        return lines

    # -- routes -----------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        router.add("POST", r"^/api/v2/attachments$", self._guard(self._presign))
        router.add("POST", r"^/api/v2/attachments/finalize$", self._guard(self._finalize))
        router.add("GET", r"^/api/v2/attachments/(?P<id>[^/]+)$", self._guard(self._show_attachment))
        router.add("GET", r"^/api/v2/records/(?P<id>[^/]+)\.json$", self._guard(self._show_record))
        router.add("PUT", r"^/api/v2/records/(?P<id>[^/]+)\.json$", self._guard(self._replace_record))
        router.add("PATCH", r"^/api/v2/records/(?P<id>[^/]+)\.json$", self._guard(self._patch_record))
        router.add("*", r"^/api/v2/", self._guard(lambda _request: _not_found()))

    def _guard(self, handler: Any) -> Any:
        """Token check and body-parse errors, the same for every route."""

        def guarded(request: Request) -> Response:
            if request.header("X-ApiToken") not in self.tokens:
                return json_response(401, {"error": "Unauthorized"})
            try:
                response: Response = handler(request)
            except BadRequest:
                return _bad_request()
            return response

        return guarded

    def _base_url(self, request: Request) -> str:
        # The URL must reach this same server the way the client did (the Host it sent is what S3 signs).
        host = request.header("Host")
        return f"http://{host}" if host and _HOST.match(host) else self.base_url

    def _check_owners(self, owners: Any) -> str | None:
        """None if ``owners`` is a non-empty list of existing owners, else the reason it is not."""
        if not isinstance(owners, list) or not owners:
            return OWNER_REQUIRED
        for owner in owners:
            if not isinstance(owner, dict) or not owner.get("type") or not owner.get("id"):
                return OWNER_REQUIRED
            kind, owner_id = owner["type"], owner["id"]
            if kind == "record" and owner_id not in self._records:
                return f"Record {owner_id} not found"
            if kind == "form" and owner_id not in self._forms:
                return f"Form {owner_id} not found"
            if kind not in ("record", "form"):
                return f"Owner type {kind!r} is not one of record, form"
        return None

    def _presign(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return _bad_request()
        unknown = sorted(set(body) - PRESIGN_KEYS)
        if unknown:
            return _unprocessable(f"unknown attribute '{unknown[0]}' for Attachment.")
        name, file_size, metadata = body.get("name"), body.get("file_size"), body.get("metadata", {})
        if not isinstance(name, str) or not name.strip():
            return _unprocessable("Name can't be blank")
        valid_size = isinstance(file_size, int) and not isinstance(file_size, bool) and file_size >= 0
        if file_size is not None and not valid_size:
            return _unprocessable("File size must be a non-negative integer")
        if not isinstance(metadata, dict):
            return _unprocessable("Metadata must be an object")
        with self._lock:
            problem = self._check_owners(body.get("owners"))
            if problem:
                return _unprocessable(problem)
            attachment_id = str(uuid.uuid4())
            key = f"{attachment_id}/{name}"
            self._attachments[attachment_id] = _Attachment(
                attachment_id, name, [dict(o) for o in body["owners"]], file_size, metadata, key, _now()
            )
            self._by_key[key] = attachment_id
        settings = self._s3.settings
        # In strict mode the filename header is signed, so a client that drops or alters it is refused.
        signed = {"x-amz-meta-filename": name} if settings.strict_meta else None
        url = self._s3.presign(
            "PUT",
            self._base_url(request),
            BUCKET,
            key,
            expires=settings.presign_expires,
            signed_headers=signed,
        )
        return json_response(200, {"url": url, "id": attachment_id, "headers": {"x-amz-meta-filename": name}})

    def _on_upload(self, blob: BlobInfo) -> None:
        if blob.bucket != BUCKET:
            return
        with self._lock:
            attachment_id = self._by_key.get(blob.key)
            if attachment_id is None:
                return
            attachment = self._attachments[attachment_id]
            attachment.uploaded_at = _now()
            attachment.size = blob.size
            attachment.md5 = blob.md5

    def _finalize(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return _bad_request()
        owners = body.get("owners")
        if not isinstance(owners, list) or not owners:
            return _unprocessable(OWNER_REQUIRED)
        with self._lock:
            attachment = self._attachments.get(str(body.get("id")))
            if attachment is None:
                return _not_found()
            problem = self._check_owners(owners)
            if problem:
                return _unprocessable(problem)
            if attachment.uploaded_at is None:
                return _unprocessable("Attachment file has not been uploaded")
            for owner in owners:  # finalize may name further owners; keep them, without duplicates
                entry = {"type": owner["type"], "id": owner["id"]}
                if entry not in attachment.owners:
                    attachment.owners.append(entry)
            if attachment.finalized_at is None:  # finalize twice (a retry) is harmless
                attachment.finalized_at = _now()
        return json_response(201, {})

    def _show_attachment(self, request: Request) -> Response:
        with self._lock:
            attachment = self._attachments.get(request.params["id"])
            if attachment is None:
                return _not_found()
            view = attachment.public()
            complete = attachment.finalized_at is not None
        url = None
        if view["uploaded"]:
            url = self._s3.presign(
                "GET", self._base_url(request), BUCKET, view["key"], expires=self._s3.settings.presign_expires
            )
        return json_response(
            200,
            {
                "attachment": {
                    "id": view["id"],
                    "owners": view["owners"],
                    "name": view["name"],
                    "file_size": view["size"] if view["size"] is not None else view["file_size"],
                    "url": url,
                    "uploaded_at": view["uploaded_at"],
                    "created_at": view["created_at"],
                    "complete": complete,
                    "status": "complete" if complete else "pending",
                }
            },
        )

    def _show_record(self, request: Request) -> Response:
        with self._lock:
            record = self._records.get(request.params["id"])
            if record is None:
                return _not_found()
            return json_response(200, {"record": copy.deepcopy(record)})

    def _record_errors(self, record_id: str, form_values: dict[str, Any]) -> dict[str, list[str]]:
        """Attachment-field items must name an existing attachment owned by this record."""
        errors: dict[str, list[str]] = {}
        owner = {"type": "record", "id": record_id}
        for field_key, value in form_values.items():
            if not isinstance(value, list):
                continue
            for item in value:
                if not isinstance(item, dict) or "attachment_id" not in item:
                    continue
                attachment = self._attachments.get(str(item["attachment_id"]))
                if attachment is None or owner not in [
                    {"type": o.get("type"), "id": o.get("id")} for o in attachment.owners
                ]:
                    errors.setdefault(field_key, []).append(f"attachment {item['attachment_id']} not found")
        return errors

    def _write_record(self, request: Request, *, whole: bool) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("record"), dict):
            return _bad_request()
        incoming: dict[str, Any] = body["record"]
        form_values = incoming.get("form_values", {} if whole else None)
        if form_values is not None and not isinstance(form_values, dict):
            return json_response(422, {"record": {"errors": {"form_values": ["must be an object"]}}})
        record_id = request.params["id"]
        with self._lock:
            current = self._records.get(record_id)
            if current is None:
                return _not_found()
            errors = self._record_errors(record_id, form_values or {})
            if errors:
                return json_response(422, {"record": {"errors": errors}})
            writable = {k: copy.deepcopy(v) for k, v in incoming.items() if k not in READ_ONLY_RECORD_KEYS}
            if whole:
                kept = {k: current[k] for k in READ_ONLY_RECORD_KEYS}
                updated = {**writable, **kept, "form_values": copy.deepcopy(form_values)}
            else:
                merged = {**current["form_values"], **copy.deepcopy(form_values or {})}
                updated = {**current, **writable, "form_values": merged}
            updated["version"] = current["version"] + 1
            updated["updated_at"] = _now()
            self._records[record_id] = updated
            return json_response(200, {"record": copy.deepcopy(updated)})

    def _replace_record(self, request: Request) -> Response:
        return self._write_record(request, whole=True)

    def _patch_record(self, request: Request) -> Response:
        return self._write_record(request, whole=False)
