"""The Fulcrum API v2 as the daemon meets it: attachments (presign, finalize, check), records, MBTiles
layers and photos.

Follows docs/vendors.md, Fulcrum. Behaviours worth knowing when reading a test against it:

* presign rejects unknown top-level keys (422 naming the key), like the real endpoint;
* the presigned URL points at this server's ``/s3/fulcrum-attachments/<id>/<name>``; a successful PUT
  there marks the attachment uploaded (via an S3 listener), finalize then marks it complete;
* record writes have no optimistic concurrency: PUT replaces the whole record (fields left out are
  dropped), PATCH replaces only the ``form_values`` keys it names, and both bump ``version``;
* a record write that references an attachment id which does not exist, or is not owned by that record,
  or a photo access key with no photo behind it, is refused with 422, so a daemon that links before
  uploading (or links to the wrong record) is caught;
* MBTiles: ``GET /file/upload_url.json`` hands out a key and a presigned PUT URL (bucket
  ``fulcrum-files``); ``POST /layers.json`` validates name and type (the documented list) and that the
  key names an uploaded blob. Layers are shown as documented, *without* the upload key, so a client
  cannot find its layer by key where the real API would not let it;
* photos: ``POST /photos.json`` is multipart, parsed as it streams in, the file part written straight to
  disk; a taken ``photo[access_key]`` is refused with 422 like the real one;
* forms: ``GET /forms.json`` lists the forms with their ``elements`` (``schema=false``: without them),
  paged like layers. A form made implicitly by ``add_record`` has no elements; ``add_form`` gives some.

State lives in memory, behind one lock; the blobs are in the S3 store on disk.
"""

from __future__ import annotations

import copy
import datetime as dt
import email.message
import hashlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs

from .s3 import BlobInfo, S3Service
from .server import BadRequest, Request, Response, Router, json_response

BUCKET = "fulcrum-attachments"
FILES_BUCKET = "fulcrum-files"  # MBTiles uploads (file/upload_url.json)
PHOTOS_BUCKET = "fulcrum-photos"  # photo bytes; never reachable over S3 routes (no URL is presigned for it)
LAYER_TYPES = ("fulcrum", "xyz", "tilejson", "geojson", "mbtiles", "wms", "feature-service")
LAYER_TYPE_ERROR = "must be one of " + ", ".join(LAYER_TYPES)
DEFAULT_PER_PAGE = 20000
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


@dataclass
class _Layer:
    id: str
    name: str
    type: str
    source: str | None
    description: str | None
    file_size: int
    created_at: str
    key: str | None = None  # the upload it was made from: kept for tests, never shown by the API

    def api_view(self) -> dict[str, Any]:
        """The documented layer object (docs/vendors.md, Fulcrum layers): no ``key`` in it."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "bounds": None,
            "center": None,
            "maxzoom": None,
            "minzoom": None,
            "access_token": None,
            "id": self.id,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "type": self.type,
            "file_size": self.file_size,
        }


def _paged(request: Request, key: str, views: list[dict[str, Any]]) -> Response:
    """One page of a Fulcrum list (``page``, ``per_page``), with the counts its answers carry."""
    query = parse_qs(request.query_string)
    try:
        page = max(int(query.get("page", ["1"])[0]), 1)
        per_page = max(int(query.get("per_page", [str(DEFAULT_PER_PAGE)])[0]), 1)
    except ValueError:
        return _bad_request()
    total_pages = max((len(views) + per_page - 1) // per_page, 1)
    shown = views[(page - 1) * per_page : page * per_page]
    return json_response(
        200,
        {key: shown, "current_page": page, "total_pages": total_pages, "total_count": len(views), "per_page": per_page},
    )


@dataclass
class _FormDef:
    id: str
    name: str
    elements: list[dict[str, Any]]  # as Fulcrum's Forms API shows them: {"type", "key", "label", ...}
    created_at: str

    def api_view(self, *, schema: bool = True) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": None,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }
        if schema:
            view["elements"] = copy.deepcopy(self.elements)
        return view


@dataclass
class _Photo:
    access_key: str
    file_size: int
    md5: str
    content_type: str
    filename: str
    created_at: str

    def api_view(self) -> dict[str, Any]:
        return {
            "access_key": self.access_key,
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "uploaded": True,
            "stored": True,
            "processed": True,
            "deleted_at": None,
            "file_size": self.file_size,
            "content_type": self.content_type,
        }


class FulcrumService:
    """Fulcrum routes under ``/api/v2/`` and the state behind them."""

    def __init__(self, s3: S3Service, tokens: Iterable[str] = ("sandbox-token",)) -> None:
        self._s3 = s3
        self.tokens = frozenset(tokens)
        self.base_url = "http://127.0.0.1"  # replaced once the server listens; used when Host is absent
        self._lock = threading.RLock()
        self._forms: dict[str, _FormDef] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._attachments: dict[str, _Attachment] = {}
        self._by_key: dict[str, str] = {}
        self._file_keys: set[str] = set()  # keys handed out by file/upload_url.json
        self._layers: dict[str, _Layer] = {}  # in creation order
        self._photos: dict[str, _Photo] = {}
        s3.add_listener(self._on_upload)

    # -- Python API (tests and the demo seed state and look at it through these) ------------------------

    def add_form(self, form_id: str, name: str | None = None, elements: list[dict[str, Any]] | None = None) -> None:
        """A form (an app); ``elements`` as the Forms API shows them, e.g. ``{"type": "AttachmentField",
        "key": "6ca0", "label": "Files"}``, Sections holding ``elements`` of their own."""
        with self._lock:
            self._forms[form_id] = _FormDef(form_id, name or form_id, copy.deepcopy(elements or []), _now())

    def add_record(
        self, record_id: str, form_id: str = "form-1", form_values: dict[str, Any] | None = None
    ) -> None:
        now = _now()
        with self._lock:
            self._forms.setdefault(form_id, _FormDef(form_id, form_id, [], now))
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

    def layers(self) -> list[dict[str, Any]]:
        """Every layer, in creation order, as the API shows it plus the ``key`` it was made from."""
        with self._lock:
            return [{**layer.api_view(), "key": layer.key} for layer in self._layers.values()]

    def layer_bytes(self, layer_id: str) -> bytes:
        with self._lock:
            layer = self._layers[layer_id]
        blob = self._s3.store.get(FILES_BUCKET, layer.key) if layer.key else None
        if blob is None:
            raise KeyError(f"layer {layer_id} has no uploaded file")
        return blob.path.read_bytes()

    def photo(self, access_key: str) -> dict[str, Any]:
        with self._lock:
            return self._photos[access_key].api_view()

    def photos(self) -> list[dict[str, Any]]:
        with self._lock:
            return [photo.api_view() for photo in self._photos.values()]

    def photo_bytes(self, access_key: str) -> bytes:
        blob = self._s3.store.get(PHOTOS_BUCKET, access_key)
        if blob is None:
            raise KeyError(f"no photo {access_key}")
        return blob.path.read_bytes()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "forms": sorted(self._forms),
                "records": copy.deepcopy(self._records),
                "attachments": {a.id: a.public() for a in self._attachments.values()},
                "layers": [{**layer.api_view(), "key": layer.key} for layer in self._layers.values()],
                "photos": {p.access_key: p.api_view() for p in self._photos.values()},
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
            lines.append("Fulcrum layers:")
            for layer in self._layers.values():
                lines.append(f"  {layer.id}  {layer.name}  {layer.type}  {layer.file_size} bytes")
            lines.append("Fulcrum photos:")
            for photo in self._photos.values():
                lines.append(f"  {photo.access_key}  {photo.filename}  {photo.file_size} bytes")
        return lines

    # -- routes -----------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        router.add("POST", r"^/api/v2/attachments$", self._guard(self._presign))
        router.add("POST", r"^/api/v2/attachments/finalize$", self._guard(self._finalize))
        router.add("GET", r"^/api/v2/attachments/(?P<id>[^/]+)$", self._guard(self._show_attachment))
        router.add("GET", r"^/api/v2/records/(?P<id>[^/]+)\.json$", self._guard(self._show_record))
        router.add("PUT", r"^/api/v2/records/(?P<id>[^/]+)\.json$", self._guard(self._replace_record))
        router.add("PATCH", r"^/api/v2/records/(?P<id>[^/]+)\.json$", self._guard(self._patch_record))
        router.add("GET", r"^/api/v2/file/upload_url\.json$", self._guard(self._file_upload_url))
        router.add("POST", r"^/api/v2/layers\.json$", self._guard(self._create_layer))
        router.add("GET", r"^/api/v2/layers\.json$", self._guard(self._list_layers))
        router.add("GET", r"^/api/v2/layers/(?P<id>[^/]+)\.json$", self._guard(self._show_layer))
        router.add("POST", r"^/api/v2/photos\.json$", self._guard(self._create_photo))
        router.add("GET", r"^/api/v2/photos/(?P<key>[^/]+)\.json$", self._guard(self._show_photo))
        router.add("GET", r"^/api/v2/photos/(?P<key>[^/]+)\.jpg$", self._guard(self._photo_file))
        router.add("GET", r"^/api/v2/forms\.json$", self._guard(self._list_forms))
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
        """Attachment-field items must name an existing attachment owned by this record; photo-field
        items an existing photo."""
        errors: dict[str, list[str]] = {}
        owner = {"type": "record", "id": record_id}
        for field_key, value in form_values.items():
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, dict) and "photo_id" in item and str(item["photo_id"]) not in self._photos:
                    errors.setdefault(field_key, []).append(f"photo {item['photo_id']} not found")
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

    # -- MBTiles layers ---------------------------------------------------------------------------------

    def _file_upload_url(self, request: Request) -> Response:
        key = f"uploads/{uuid.uuid4()}"
        with self._lock:
            self._file_keys.add(key)
        url = self._s3.presign(
            "PUT", self._base_url(request), FILES_BUCKET, key, expires=self._s3.settings.presign_expires
        )
        return json_response(200, {"file": {"url": url, "key": key}})

    def _layer_errors(self, layer: dict[str, Any]) -> dict[str, list[str]]:
        """Validation as documented: name and type required, type from the list; an mbtiles layer needs
        the key of an uploaded file, any other type a source."""
        errors: dict[str, list[str]] = {}
        name, kind = layer.get("name"), layer.get("type")
        if not isinstance(name, str) or not name.strip():
            errors["name"] = ["can't be blank"]
        if kind not in LAYER_TYPES:
            errors["type"] = [LAYER_TYPE_ERROR]
        elif kind == "mbtiles":
            key = layer.get("key")
            if not isinstance(key, str) or key not in self._file_keys:
                errors["key"] = ["is not a known upload"]
            elif self._s3.store.get(FILES_BUCKET, key) is None:
                errors["key"] = ["file has not been uploaded"]
        elif not isinstance(layer.get("source"), str) or not layer["source"].strip():
            errors["source"] = ["can't be blank"]
        return errors

    def _create_layer(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("layer"), dict):
            return _bad_request()
        incoming: dict[str, Any] = body["layer"]
        with self._lock:
            errors = self._layer_errors(incoming)
            if errors:
                return json_response(422, {"layer": {"errors": errors}})
            layer_id = str(uuid.uuid4())
            key = incoming.get("key") if incoming["type"] == "mbtiles" else None
            blob = self._s3.store.get(FILES_BUCKET, key) if key else None
            # An uploaded MBTiles layer is served as tiles; its source is that URL, not the upload key.
            source = f"{self.base_url}/tiles/{layer_id}/{{z}}/{{x}}/{{y}}.png" if key else incoming["source"]
            description = incoming.get("description")
            layer = _Layer(
                layer_id, incoming["name"], incoming["type"], source,
                description if isinstance(description, str) else None,
                blob.size if blob is not None else 0, _now(), key,
            )
            self._layers[layer_id] = layer
            return json_response(200, {"layer": layer.api_view()})

    def _list_layers(self, request: Request) -> Response:
        with self._lock:
            views = [layer.api_view() for layer in self._layers.values()]
        return _paged(request, "layers", views)

    def _show_layer(self, request: Request) -> Response:
        with self._lock:
            layer = self._layers.get(request.params["id"])
            if layer is None:
                return _not_found()
            return json_response(200, {"layer": layer.api_view()})

    # -- forms ------------------------------------------------------------------------------------------

    def _list_forms(self, request: Request) -> Response:
        schema = parse_qs(request.query_string).get("schema", ["true"])[0] != "false"
        with self._lock:
            views = [form.api_view(schema=schema) for form in self._forms.values()]
        return _paged(request, "forms", views)

    # -- photos -----------------------------------------------------------------------------------------

    def _create_photo(self, request: Request) -> Response:
        boundary = _boundary(request.header("Content-Type"))
        if boundary is None:
            return _bad_request()
        temp: Path | None = None
        try:
            fd, temp = self._s3.store.new_temp(PHOTOS_BUCKET)
            with os.fdopen(fd, "wb") as sink:
                form = _read_form(request, boundary, "photo[file]", sink)
            return self._store_photo(form, temp)
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)  # committed photos were renamed away; anything left is junk

    def _store_photo(self, form: _Form, temp: Path) -> Response:
        access_key = form.fields.get("photo[access_key]", "").strip()
        errors: dict[str, list[str]] = {}
        if not access_key:
            errors["access_key"] = ["can't be blank"]
        if form.file is None or form.file.size == 0:
            errors["file"] = ["can't be blank"]
        with self._lock:
            if access_key and access_key in self._photos:
                errors["access_key"] = ["has already been taken"]
            if errors or form.file is None:
                return json_response(422, {"photo": {"errors": errors}})
            received = form.file
            self._s3.store.commit(temp, PHOTOS_BUCKET, access_key, received.size, received.md5, {})
            photo = _Photo(access_key, received.size, received.md5, received.content_type, received.filename, _now())
            self._photos[access_key] = photo
            return json_response(200, {"photo": photo.api_view()})

    def _show_photo(self, request: Request) -> Response:
        with self._lock:
            photo = self._photos.get(request.params["key"])
            if photo is None:
                return _not_found()
            return json_response(200, {"photo": photo.api_view()})

    def _photo_file(self, request: Request) -> Response:
        blob = self._s3.store.get(PHOTOS_BUCKET, request.params["key"])
        if blob is None:
            return _not_found()
        return Response(200, headers={"Content-Type": "image/jpeg"}, file=blob.path, file_size=blob.size)


# -- multipart/form-data, parsed as it streams in ----------------------------------------------------------

READ_SIZE = 1024 * 1024
MAX_PART_HEADERS = 16 * 1024
MAX_FIELD = 64 * 1024


@dataclass
class _Received:
    size: int
    md5: str
    content_type: str
    filename: str


@dataclass
class _Form:
    fields: dict[str, str]
    file: _Received | None


def _boundary(content_type: str | None) -> bytes | None:
    if not content_type:
        return None
    message = email.message.Message()
    message["Content-Type"] = content_type
    if message.get_content_type() != "multipart/form-data":
        return None
    boundary = message.get_param("boundary")
    return boundary.encode() if isinstance(boundary, str) and 0 < len(boundary) <= 70 else None


class _BodyBuffer:
    """The request body seen through a small window: enough to find delimiters, never the whole body."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.data = b"\r\n"  # so the first delimiter reads like every other: CRLF "--" boundary

    def fill(self) -> None:
        chunk = self._request.read(READ_SIZE)
        if not chunk:
            raise BadRequest("multipart body ended early")
        self.data += chunk

    def take_until(self, marker: bytes, limit: int) -> bytes:
        """Everything before ``marker`` (consumed with it); at most ``limit`` bytes of it."""
        while (index := self.data.find(marker)) < 0:
            if len(self.data) > limit + len(marker):
                raise BadRequest("multipart part too large")
            self.fill()
        if index > limit:
            raise BadRequest("multipart part too large")
        before, self.data = self.data[:index], self.data[index + len(marker) :]
        return before

    def stream_until(self, marker: bytes, write: Callable[[bytes], object]) -> None:
        """Pass everything before ``marker`` to ``write`` (consumed with it), in pieces."""
        keep = len(marker) - 1  # a marker may straddle two reads
        while (index := self.data.find(marker)) < 0:
            if len(self.data) > keep:
                write(self.data[:-keep])
                self.data = self.data[-keep:]
            self.fill()
        write(self.data[:index])
        self.data = self.data[index + len(marker) :]

    def take(self, count: int) -> bytes:
        while len(self.data) < count:
            self.fill()
        taken, self.data = self.data[:count], self.data[count:]
        return taken


def _part_headers(raw: bytes) -> tuple[str, str | None, str]:
    """(name, filename or None, content type) from one part's header block."""
    message = email.message.Message()
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("malformed part header")
        message[name.strip()] = value.strip()
    if message.get_content_disposition() != "form-data":
        raise BadRequest("part is not form-data")
    name = message.get_param("name", header="content-disposition")
    if not isinstance(name, str):
        raise BadRequest("part has no name")
    filename = message.get_param("filename", header="content-disposition")
    content_type = message.get("Content-Type", "application/octet-stream")
    return name, filename if isinstance(filename, str) else None, str(content_type)


def _read_form(request: Request, boundary: bytes, file_field: str, sink: BinaryIO) -> _Form:
    """Parse the body part by part: ``file_field`` is written to ``sink`` as it arrives (memory stays
    flat at any size), other parts are small text fields. Raises BadRequest if it is not well formed."""
    body = _BodyBuffer(request)
    delimiter = b"\r\n--" + boundary
    body.take_until(delimiter, MAX_FIELD)  # the preamble, if any
    fields: dict[str, str] = {}
    received: _Received | None = None
    while True:
        after = body.take(2)
        if after == b"--":
            return _Form(fields, received)  # the closing delimiter; any epilogue is ignored
        if after != b"\r\n":
            raise BadRequest("malformed multipart delimiter")
        name, filename, content_type = _part_headers(body.take_until(b"\r\n\r\n", MAX_PART_HEADERS))
        if name == file_field and received is None:
            received = _stream_part(body, delimiter, sink, content_type, filename or "")
        else:
            fields[name] = body.take_until(delimiter, MAX_FIELD).decode("utf-8", "replace")


def _stream_part(body: _BodyBuffer, delimiter: bytes, sink: BinaryIO, content_type: str, filename: str) -> _Received:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0

    def write(piece: bytes) -> None:
        nonlocal size
        digest.update(piece)
        sink.write(piece)
        size += len(piece)

    body.stream_until(delimiter, write)
    return _Received(size, digest.hexdigest(), content_type, filename)
