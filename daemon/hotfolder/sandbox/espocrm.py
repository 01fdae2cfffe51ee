"""The EspoCRM REST API (v1) as the daemon meets it: attachments (inline and chunked) and records.

Follows docs/vendors.md (EspoCRM) and, where it is silent, EspoCRM's own source. Worth knowing when
reading a test against it:

* Auth: ``X-Api-Key`` with a key that has no secret, or ``X-Hmac-Authorization: base64(key + ":" +
  hex(HMAC-SHA256(secret, METHOD + " " + path)))`` where ``path`` is the request path as sent
  (percent-encoded) after ``/api/v1``, leading slash kept, query never included. Anything else: 401
  with an empty body.
* Refusals have an empty body and their reason in ``X-Status-Reason``.
* ``POST Attachment`` checks, first failure wins: 400 ``No file contents.`` / ``Bad file contents.`` /
  ``Could not decode file contents.``, 403 ``Role not allowed.``, ``Field 'x' does not exist.``,
  ``Not allowed file type.`` (Document.file's extension list), ``Attachment size exceeds
  attachmentUploadMaxSize.``. Stricter than EspoCRM in one way, to catch adapter mistakes: a File
  field must be named by ``relatedType`` and an Attachment-Multiple one by ``parentType`` (403
  ``Not allowed field type.`` otherwise).
* Chunked mode (``isBeingUploaded`` + ``size``, then ``POST Attachment/chunk/{id}``) behaves like
  EspoCRM's UploadService: a chunk is appended whatever came before it (no offset), a total beyond
  ``size`` is appended *and then* refused with 500 ``File size mismatch.``, the upload is complete
  when the total equals ``size``.
* ``PUT {Entity}/{id}``: ``<field>Id`` replaces a File field and deletes the attachment it held;
  ``<field>Ids`` replaces an Attachment-Multiple field's whole set (the ids left out are unlinked).
  Unknown attributes are ignored, as EspoCRM does. Stricter than EspoCRM: an id that is unknown,
  still being uploaded or made for another entity/field is refused (400 ``validationFailure``).

Bodies are read as streams: the simulator never holds an upload in memory. ``POST Attachment`` is
scanned by a small incremental JSON reader with these assumptions: the body is one UTF-8 JSON object;
every member but ``file`` is small (at most 64 KiB) and parsed by ``json``; a string ``file`` is never
buffered: its text up to the first comma (at most 1 KiB) is the data-URI header, and what follows is
base64-decoded to a file on disk as it arrives (JSON escapes such as ``\\/`` are honoured, characters
outside the base64 alphabet are skipped as PHP's ``base64_decode`` does, a second comma ends the data
as PHP's ``explode(',')`` does). A chunk body (``data:<mime>;base64,<chunk>``) is decoded the same way.

State lives in memory behind one lock; the bytes are files under ``<sandbox data>/espocrm/``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .s3 import S3Service
from .server import BadRequest, Request, Response, Router, json_response

API = "/api/v1"
READ_SIZE = 256 * 1024
MAX_MEMBER = 64 * 1024  # any JSON member but "file"
MAX_HEADER = 1024  # "data:<mime>;base64," and the like
DEFAULT_MAX_UPLOAD = 256 * 1024 * 1024
ATTACHMENT_ROLES = frozenset({"Attachment", "Inline Attachment"})
DOCUMENT_EXTENSIONS = frozenset(
    {"pdf", "odt", "ods", "odp", "docx", "xlsx", "pptx", "doc", "xls", "ppt", "rtf", "csv", "md", "txt"}
)
FILE_KINDS = frozenset({"file", "image"})  # fields named by relatedType
MULTIPLE_KIND = "attachmentMultiple"  # fields named by parentType
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/=]")
_QUOTE_OR_ESCAPE = re.compile(rb'["\\]')
_ESCAPES = {b'"': b'"', b"\\": b"\\", b"/": b"/", b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t"}
_DECODER = json.JSONDecoder()


def _refuse(status: int, reason: str = "") -> Response:
    """EspoCRM's error shape: no body, the reason in a header."""
    return Response(status, b"", {"X-Status-Reason": reason} if reason else {})


def _new_id() -> str:
    return uuid.uuid4().hex[:17]  # EspoCRM ids are 17 hex characters


# -- reading bodies as streams ------------------------------------------------------------------------------


class _Body:
    """A request body with a read cursor, filled a piece at a time: enough to scan one JSON object."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._buf = b""
        self._pos = 0
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self._request.read(READ_SIZE)
        if not data:
            self.eof = True
            if self._request.truncated:
                raise BadRequest("incomplete body")
            return False
        self._buf = self._buf[self._pos :] + data
        self._pos = 0
        return True

    def _ensure(self, count: int) -> bool:
        while len(self._buf) - self._pos < count:
            if not self._fill():
                return False
        return True

    def next_char(self) -> bytes:
        """The next byte that is not JSON whitespace, consumed; b"" at the end."""
        while True:
            if not self._ensure(1):
                return b""
            char = self._buf[self._pos : self._pos + 1]
            self._pos += 1
            if char not in b" \t\r\n":
                return char

    def peek_char(self) -> bytes:
        char = self.next_char()
        if char:
            self._pos -= 1
        return char

    def string(self, limit: int) -> str:
        """A whole JSON string (the opening quote already consumed), at most ``limit`` bytes."""
        parts: list[bytes] = []
        total = 0
        for piece in self.string_pieces():
            total += len(piece)
            if total > limit:
                raise BadRequest("string too long")
            parts.append(piece)
        return b"".join(parts).decode("utf-8", "replace")

    def string_pieces(self) -> Iterator[bytes]:
        """The content of a JSON string in pieces, unescaped; the opening quote already consumed."""
        while True:
            match = _QUOTE_OR_ESCAPE.search(self._buf, self._pos)
            if match is None:
                if self._pos < len(self._buf):
                    yield self._buf[self._pos :]
                self._pos = len(self._buf)
                if not self._fill():
                    raise BadRequest("unterminated string")
                continue
            start = match.start()
            if start > self._pos:
                yield self._buf[self._pos : start]
            self._pos = start + 1
            if match.group() == b'"':
                return
            yield self._escape()

    def _escape(self) -> bytes:
        if not self._ensure(1):
            raise BadRequest("unterminated escape")
        code = self._buf[self._pos : self._pos + 1]
        self._pos += 1
        if code == b"u":
            if not self._ensure(4):
                raise BadRequest("unterminated escape")
            digits = self._buf[self._pos : self._pos + 4]
            self._pos += 4
            try:
                return chr(int(digits, 16)).encode("utf-8", "surrogatepass")
            except ValueError:
                raise BadRequest("bad escape") from None
        if code not in _ESCAPES:
            raise BadRequest("bad escape")
        return _ESCAPES[code]

    def small_value(self, limit: int) -> Any:
        """One JSON value that is known to be small, parsed by ``json``."""
        self.peek_char()  # skip whitespace
        while True:
            text = self._buf[self._pos :].decode("utf-8", "surrogateescape")
            try:
                value, end = _DECODER.raw_decode(text)
            except json.JSONDecodeError:
                end = -1
            # A value that ends with the buffer may go on (a number cut in two): read on first.
            if end >= 0 and (end < len(text) or self.eof):
                self._pos += len(text[:end].encode("utf-8", "surrogateescape"))
                return value
            if len(self._buf) - self._pos > limit:
                raise BadRequest("value too large")
            if not self._fill() and end < 0:
                raise BadRequest("bad JSON")


class _Base64Sink:
    """Takes the text of a data URI in pieces and decodes what follows its header to a file.

    The header ends at ``separator`` (``,`` in a JSON ``file`` value, ``;base64,`` in a chunk). With
    ``comma_ends`` the data ends at the next ``,``, as EspoCRM's explode(',') of the ``file`` value has
    it. Bytes beyond ``max_bytes`` are counted but not written. ``bad`` is set for base64 that cannot be decoded.
    """

    def __init__(self, out: BinaryIO, separator: bytes, max_bytes: int, *, comma_ends: bool) -> None:
        self._out = out
        self._separator = separator
        self._comma_ends = comma_ends
        self._max_bytes = max_bytes
        self._header = b""
        self.header_found = False
        self._ended = False
        self._padded = False
        self._carry = b""
        self.size = 0
        self.bad = False

    def feed(self, piece: bytes) -> None:
        if self._ended or self.bad:
            return
        if not self.header_found:
            self._header += piece
            at = self._header.find(self._separator)
            if at < 0:
                if len(self._header) > MAX_HEADER:
                    self._ended = True  # no header where one must be: "bad contents"
                return
            self.header_found = True
            piece = self._header[at + len(self._separator) :]
            self._header = b""
        comma = piece.find(b",") if self._comma_ends else -1
        if comma >= 0:
            piece, self._ended = piece[:comma], True
        self._decode(piece)

    def _decode(self, piece: bytes) -> None:
        if _NOT_BASE64.search(piece):
            piece = _NOT_BASE64.sub(b"", piece)
        data = self._carry + piece if self._carry else piece
        if self._padded and data.strip(b"="):
            self.bad = True  # data after the padding
            return
        whole = len(data) - len(data) % 4
        self._carry = data[whole:]
        if whole:
            self._write(data[:whole])

    def _write(self, quads: bytes) -> None:
        pad = quads.find(b"=")
        if pad >= 0:
            if quads[pad:].strip(b"=") or pad < len(quads) - 4:
                self.bad = True  # padding inside the data
                return
            self._padded = True
        try:
            decoded = binascii.a2b_base64(quads)
        except binascii.Error:
            self.bad = True
            return
        if self.size + len(decoded) <= self._max_bytes:
            self._out.write(decoded)
        self.size += len(decoded)

    def finish(self) -> None:
        if self.bad or not self.header_found or not self._carry:
            return
        if len(self._carry) == 1 or self._padded:
            self.bad = True
            return
        self._write(self._carry + b"=" * (4 - len(self._carry)))


@dataclass
class _Upload:
    """What ``POST Attachment`` carried: its small members, and the ``file`` value if it streamed."""

    members: dict[str, Any]
    sink: _Base64Sink | None


def _read_attachment_post(request: Request, out: BinaryIO, max_bytes: int) -> _Upload:
    body = _Body(request)
    if body.next_char() != b"{":
        raise BadRequest("expected a JSON object")
    members: dict[str, Any] = {}
    sink: _Base64Sink | None = None
    if body.peek_char() == b"}":
        body.next_char()
    else:
        while True:
            if body.next_char() != b'"':
                raise BadRequest("expected a member name")
            key = body.string(MAX_HEADER)
            if body.next_char() != b":":
                raise BadRequest("expected ':'")
            if key == "file" and body.peek_char() == b'"':
                body.next_char()
                sink = _Base64Sink(out, b",", max_bytes, comma_ends=True)
                for piece in body.string_pieces():
                    sink.feed(piece)
                sink.finish()
                members.pop("file", None)
            else:
                members[key] = body.small_value(MAX_MEMBER)
                if key == "file":
                    sink = None
            after = body.next_char()
            if after == b"}":
                break
            if after != b",":
                raise BadRequest("expected ',' or '}'")
    if body.next_char():
        raise BadRequest("data after the JSON object")
    return _Upload(members, sink)


def _read_chunk(request: Request, out: BinaryIO, max_bytes: int) -> _Base64Sink:
    sink = _Base64Sink(out, b";base64,", max_bytes, comma_ends=False)
    while piece := request.read(READ_SIZE):
        sink.feed(piece)
    if request.truncated:
        raise BadRequest("incomplete body")
    sink.finish()
    return sink


# -- state --------------------------------------------------------------------------------------------------


@dataclass
class _Attachment:
    id: str
    name: str
    type: str
    role: str
    field: str
    related_type: str | None
    parent_type: str | None
    size: int
    path: Path
    being_uploaded: bool = False
    received: int = 0
    related_id: str | None = None
    parent_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def entity(self) -> str | None:
        return self.parent_type or self.related_type

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "role": self.role,
            "field": self.field,
            "relatedType": self.related_type,
            "relatedId": self.related_id,
            "parentType": self.parent_type,
            "parentId": self.parent_id,
            "size": self.size,
            "received": self.received,
            "isBeingUploaded": self.being_uploaded,
        }


class EspoCRMService:
    """EspoCRM routes under ``/api/v1/`` and the state behind them."""

    def __init__(self, s3: S3Service) -> None:
        self.base_url = ""
        # API key → HMAC secret (None: the key is used as X-Api-Key).
        self.api_keys: dict[str, str | None] = {"sandbox-espo-key": None, "sandbox-hmac-key": "sandbox-hmac-secret"}
        self.max_upload_size = DEFAULT_MAX_UPLOAD
        # entity → field → kind ("file", "image", "attachmentMultiple", or a plain type such as "varchar")
        self.entities: dict[str, dict[str, str]] = {
            "Document": {"name": "varchar", "description": "text", "file": "file"},
            "Note": {"post": "text", "type": "varchar", "attachments": MULTIPLE_KIND},
        }
        self.accepted_extensions: dict[tuple[str, str], frozenset[str]] = {("Document", "file"): DOCUMENT_EXTENSIONS}
        self._dir = s3.store.root.parent / "espocrm"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, dict[str, Any]]] = {}
        self._attachments: dict[str, _Attachment] = {}

    # -- Python API for tests and the demo ------------------------------------------------------------------

    def add_record(self, entity: str, record_id: str, **attributes: Any) -> None:
        """A record of a known entity, e.g. ``add_record("Note", "n1", attachmentsIds=["a"])``."""
        fields = self.entities[entity]
        record: dict[str, Any] = {"id": record_id}
        for name, kind in fields.items():
            if kind in FILE_KINDS:
                record[f"{name}Id"] = None
            elif kind == MULTIPLE_KIND:
                record[f"{name}Ids"] = []
            else:
                record[name] = None
        record.update(copy.deepcopy(attributes))
        with self._lock:
            self._records.setdefault(entity, {})[record_id] = record

    def add_attachment(self, entity: str, field_name: str, data: bytes, name: str = "existing.txt") -> str:
        """A complete attachment made outside the daemon (e.g. to put on a record first); returns its id."""
        multiple = self.entities[entity][field_name] == MULTIPLE_KIND
        attachment_id = _new_id()
        path = self._dir / attachment_id
        path.write_bytes(data)
        attachment = _Attachment(
            attachment_id, name, "text/plain", "Attachment", field_name, None if multiple else entity,
            entity if multiple else None, len(data), path, received=len(data),
        )
        with self._lock:
            self._attachments[attachment_id] = attachment
        return attachment_id

    def record(self, entity: str, record_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._records[entity][record_id])

    def attachment(self, attachment_id: str) -> dict[str, Any]:
        with self._lock:
            return self._attachments[attachment_id].public()

    def attachments(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.public() for a in self._attachments.values()]

    def attachment_path(self, attachment_id: str) -> Path:
        with self._lock:
            return self._attachments[attachment_id].path

    def attachment_bytes(self, attachment_id: str) -> bytes:
        return self.attachment_path(attachment_id).read_bytes()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "records": copy.deepcopy(self._records),
                "attachments": {a.id: a.public() for a in self._attachments.values()},
                "max_upload_size": self.max_upload_size,
            }

    def describe(self) -> list[str]:
        lines = [f"EspoCRM API: {self.base_url}{API}/  keys: {', '.join(sorted(self.api_keys))}", "EspoCRM records:"]
        with self._lock:
            for entity, records in self._records.items():
                for record in records.values():
                    links = {k: v for k, v in record.items() if k.endswith(("Id", "Ids")) and v}
                    lines.append(f"  {entity}/{record['id']}  {json.dumps(links)}")
            lines.append("EspoCRM attachments:")
            for a in self._attachments.values():
                status = "uploading" if a.being_uploaded else "complete"
                lines.append(f"  {a.id}  {a.name}  {a.received}/{a.size} bytes  {status}  {a.entity}.{a.field}")
        return lines

    # -- routes ---------------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        router.add("POST", rf"^{API}/Attachment$", self._guard(self._create_attachment))
        router.add("POST", rf"^{API}/Attachment/chunk/(?P<id>[^/]+)$", self._guard(self._chunk))
        router.add("GET", rf"^{API}/Attachment/file/(?P<id>[^/]+)$", self._guard(self._download))
        router.add("GET", rf"^{API}/(?P<entity>[A-Za-z0-9]+)/(?P<id>[^/]+)$", self._guard(self._read_record))
        router.add("PUT", rf"^{API}/(?P<entity>[A-Za-z0-9]+)/(?P<id>[^/]+)$", self._guard(self._update_record))
        router.add("*", rf"^{API}/", self._guard(lambda _request: _refuse(404)))

    def _guard(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            if not self._authenticated(request):
                return _refuse(401)
            try:
                return handler(request)
            except BadRequest:
                return _refuse(400, "Bad request.")

        return guarded

    def _authenticated(self, request: Request) -> bool:
        key = request.header("X-Api-Key")
        if key is not None:
            return key in self.api_keys and self.api_keys[key] is None
        token = request.header("X-Hmac-Authorization")
        if token is None:
            return False
        try:
            key, _, digest = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        secret = self.api_keys.get(key)
        if not secret:
            return False
        signed = f"{request.method} {request.raw_path.removeprefix(API)}".encode()
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(digest, expected)

    # -- attachments ------------------------------------------------------------------------------------------

    def _create_attachment(self, request: Request) -> Response:
        fd, temp_name = tempfile.mkstemp(prefix=".upload-", dir=self._dir)
        temp = Path(temp_name)
        try:
            with open(fd, "wb") as out:
                upload = _read_attachment_post(request, out, self.max_upload_size)
            refusal = self._check_new_attachment(upload)
            if refusal is not None:
                return refusal
            return self._store_attachment(upload, temp)
        finally:
            temp.unlink(missing_ok=True)

    def _check_new_attachment(self, upload: _Upload) -> Response | None:
        """EspoCRM's checks, in its order; None when the attachment may be created."""
        members, sink = upload.members, upload.sink
        chunked = bool(members.get("isBeingUploaded"))
        if not chunked:
            if sink is None and "file" not in members:
                return _refuse(400, "No file contents.")
            if sink is None or not sink.header_found:
                return _refuse(400, "Bad file contents.")
            if sink.bad:
                return _refuse(400, "Could not decode file contents.")
        if members.get("role") not in ATTACHMENT_ROLES:
            return _refuse(403, "Role not allowed.")
        refusal = self._check_field(members)
        if refusal is not None:
            return refusal
        size = members.get("size") if chunked else sink.size if sink else 0
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return _refuse(400, "Bad size.")
        if size > self.max_upload_size:
            return _refuse(403, "Attachment size exceeds attachmentUploadMaxSize.")
        return None

    def _check_field(self, members: dict[str, Any]) -> Response | None:
        parent_type, related_type = members.get("parentType"), members.get("relatedType")
        entity = parent_type or related_type
        field_name = members.get("field")
        kind = self.entities.get(str(entity), {}).get(str(field_name))
        if kind not in FILE_KINDS and kind != MULTIPLE_KIND:
            return _refuse(403, f"Field '{field_name}' does not exist.")
        if (kind == MULTIPLE_KIND) != bool(parent_type):
            return _refuse(403, "Not allowed field type.")
        accepted = self.accepted_extensions.get((str(entity), str(field_name)))
        name = str(members.get("name") or "")
        extension = name.rpartition(".")[2].lower() if "." in name else ""
        if accepted is not None and extension not in accepted:
            return _refuse(403, "Not allowed file type.")
        return None

    def _store_attachment(self, upload: _Upload, temp: Path) -> Response:
        members = upload.members
        chunked = bool(members.get("isBeingUploaded"))
        attachment_id = _new_id()
        path = self._dir / attachment_id
        if chunked:
            path.touch()
            size, received = int(members["size"]), 0
        else:
            os.replace(temp, path)
            size = received = upload.sink.size if upload.sink else 0
        parent_type = members.get("parentType")
        attachment = _Attachment(
            attachment_id,
            str(members.get("name") or ""),
            str(members.get("type") or ""),
            str(members["role"]),
            str(members["field"]),
            None if parent_type else members.get("relatedType"),
            parent_type,
            size,
            path,
            being_uploaded=chunked,
            received=received,
        )
        with self._lock:
            self._attachments[attachment_id] = attachment
        view = attachment.public()
        return json_response(200, {k: v for k, v in view.items() if k != "received"})

    def _chunk(self, request: Request) -> Response:
        with self._lock:
            attachment = self._attachments.get(request.params["id"])
        if attachment is None:
            return _refuse(404)
        if not attachment.being_uploaded:
            return _refuse(403, "Attachment is not being-uploaded.")
        with attachment.lock, tempfile.TemporaryFile(dir=self._dir) as part:
            sink = _read_chunk(request, part, self.max_upload_size)
            if not sink.header_found:
                return _refuse(400, "Bad file data.")
            if sink.bad:
                return _refuse(400, "Could not decode file contents.")
            if attachment.received + sink.size > self.max_upload_size:
                return _refuse(403, "Max attachment size exceeded.")
            part.seek(0)
            with attachment.path.open("ab") as blob:
                shutil.copyfileobj(part, blob, READ_SIZE)
            attachment.received += sink.size
            if attachment.received > attachment.size:
                return _refuse(500, "File size mismatch.")  # appended all the same, as EspoCRM does
            if attachment.received == attachment.size:
                attachment.being_uploaded = False
        return json_response(200, True)

    def _download(self, request: Request) -> Response:
        with self._lock:
            attachment = self._attachments.get(request.params["id"])
        if attachment is None:
            return _refuse(404)
        size = attachment.path.stat().st_size
        headers = {"Content-Type": attachment.type or "application/octet-stream"}
        return Response(200, headers=headers, file=attachment.path, file_size=size)

    # -- records ----------------------------------------------------------------------------------------------

    def _record_view(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(record)
        for name, kind in self.entities[entity].items():
            if kind in FILE_KINDS:
                linked = self._attachments.get(str(record.get(f"{name}Id")))
                view[f"{name}Name"] = linked.name if linked else None
            elif kind == MULTIPLE_KIND:
                ids = record.get(f"{name}Ids") or []
                view[f"{name}Names"] = {i: self._attachments[i].name for i in ids if i in self._attachments}
        return view

    def _read_record(self, request: Request) -> Response:
        entity, record_id = request.params["entity"], request.params["id"]
        with self._lock:
            record = self._records.get(entity, {}).get(record_id)
            if record is None:
                return _refuse(404)
            return json_response(200, self._record_view(entity, record))

    def _update_record(self, request: Request) -> Response:
        entity, record_id = request.params["entity"], request.params["id"]
        changes = request.json()
        if not isinstance(changes, dict):
            return _refuse(400, "Bad request.")
        with self._lock:
            record = self._records.get(entity, {}).get(record_id)
            if record is None:
                return _refuse(404)
            problem = self._check_links(entity, changes)
            if problem is not None:
                return json_response(400, {"messageTranslation": {"label": problem}},
                                     {"X-Status-Reason": "validationFailure"})
            self._apply(entity, record_id, record, changes)
            return json_response(200, self._record_view(entity, record))

    def _link_attributes(self, entity: str) -> dict[str, tuple[str, str]]:
        """Attribute name → (field, kind) for the entity's attachment fields."""
        out: dict[str, tuple[str, str]] = {}
        for name, kind in self.entities[entity].items():
            if kind in FILE_KINDS:
                out[f"{name}Id"] = (name, kind)
            elif kind == MULTIPLE_KIND:
                out[f"{name}Ids"] = (name, kind)
        return out

    def _check_links(self, entity: str, changes: dict[str, Any]) -> str | None:
        links = self._link_attributes(entity)
        for attribute, value in changes.items():
            if attribute not in links:
                continue
            field_name, kind = links[attribute]
            if kind == MULTIPLE_KIND:
                if not isinstance(value, list):
                    return f"{attribute} must be a list"
                ids = value
            else:
                ids = [] if value is None else [value]
            for attachment_id in ids:
                attachment = self._attachments.get(str(attachment_id))
                if attachment is None:
                    return f"{attribute}: attachment {attachment_id} not found"
                if attachment.being_uploaded:
                    return f"{attribute}: attachment {attachment_id} is still being uploaded"
                if (attachment.entity, attachment.field) != (entity, field_name):
                    made_for = f"{attachment.entity}.{attachment.field}"
                    return f"{attribute}: attachment {attachment_id} was made for {made_for}"
        return None

    def _apply(self, entity: str, record_id: str, record: dict[str, Any], changes: dict[str, Any]) -> None:
        links = self._link_attributes(entity)
        plain = {name for name, kind in self.entities[entity].items() if kind not in FILE_KINDS | {MULTIPLE_KIND}}
        for attribute, value in changes.items():
            if attribute in links:
                _, kind = links[attribute]
                if kind == MULTIPLE_KIND:
                    self._replace_set(record_id, record, attribute, [str(v) for v in value])
                else:
                    self._replace_file(record_id, record, attribute, None if value is None else str(value))
            elif attribute in plain:
                record[attribute] = copy.deepcopy(value)
            # anything else (id, derived names, unknown attributes) is ignored, as EspoCRM does

    def _replace_file(self, record_id: str, record: dict[str, Any], attribute: str, new: str | None) -> None:
        old = record.get(attribute)
        if old and old != new:
            removed = self._attachments.pop(old, None)  # EspoCRM deletes the file the field held
            if removed is not None:
                removed.path.unlink(missing_ok=True)
        record[attribute] = new
        if new is not None:
            self._attachments[new].related_id = record_id

    def _replace_set(self, record_id: str, record: dict[str, Any], attribute: str, ids: list[str]) -> None:
        for old in record.get(attribute) or []:
            if old not in ids and old in self._attachments:
                self._attachments[old].parent_id = None
        for new in ids:
            self._attachments[new].parent_id = record_id
        record[attribute] = list(dict.fromkeys(ids))
