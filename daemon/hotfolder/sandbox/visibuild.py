"""The Visibuild Core API as the daemon meets it: OAuth client credentials, attachments, tickets.

Follows docs/vendors.md, Visibuild (from Visibuild's "Uploading attachments via API"). Behaviours
worth knowing when reading a test against it:

* ``POST /oauth/token`` (form-encoded, client credentials in the body or HTTP Basic) issues opaque
  tokens that live ``token_lifetime`` seconds. A token asked for without the ``write`` scope is
  read-only: every POST/PUT/PATCH/DELETE with it is refused 403. ``static_tokens`` are long-lived
  tokens with every scope. A bad client is 401 ``{"error": "invalid_client"}``; a missing, unknown,
  expired or revoked bearer token is 401 on every API route. ``revoke_tokens()`` forgets every issued
  token, as a server-side rotation would, so a client must renew on its next 401.
* ``POST /api/core/v1/attachments`` needs all of filename, contentType, fileSize and checksum and
  answers a presigned PUT on this server's S3 (``/s3/visibuild-uploads/attachment/<uuid>/<filename>``).
  The URL signs ``Content-Type``, ``Content-MD5`` and ``Content-Length``, so S3 itself refuses what
  the real one would: another Content-Type or length → 403 SignatureDoesNotMatch, bytes that do not
  match the checksum → 400 BadDigest. Signing Content-Length is our choice for enforcing the declared
  fileSize: S3 answers a signed length mismatch with 403 SignatureDoesNotMatch (the same remedy for a
  client: presign again with the real size).
* ``POST /api/core/v1/tickets`` checks title and projectId (unknown project → 404), then every key in
  ``attachmentKeys`` in order: not uploaded → 422 "attachment key not found", uploaded by another
  company → 422 "attachment belongs to another company", linked to any ticket → 422 "attachment
  already associated". One failing key rejects the whole request; no ticket is made. The check and
  the link happen under one lock, so two concurrent creates can never share a key.
* Answers are wrapped in ``{"data": {...}}``; errors are ``{"errors": [{"status", "detail"}]}``
  except where OAuth or Visibuild's guide says otherwise (``{"error": ...}`` from the token endpoint,
  ``{"message": ...}`` for a read-only token), so a client meets more than one error shape.

State lives in memory behind one lock; the blobs are in the S3 store on disk.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .s3 import BlobInfo, S3Service
from .server import BadRequest, Request, Response, Router, json_response

API = "/api/core/v1"
BUCKET = "visibuild-uploads"
COMPANY = "sandbox-company"
OTHER_COMPANY = "another-company"
MAX_FILE_SIZE = 5 * 1024**3
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KNOWN_SCOPES = frozenset({"read", "write"})
_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")

Handler = Callable[[Request], Response]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, detail: str) -> Response:
    return json_response(status, {"errors": [{"status": str(status), "detail": detail}]})


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_md5_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


@dataclass
class _Grant:
    """An issued access token: who it is for, what it may do, until when."""

    scopes: frozenset[str]
    expires_at: float  # time.time()


@dataclass
class _Upload:
    key: str
    filename: str
    content_type: str
    file_size: int
    checksum: str
    company: str
    created_at: str
    id: str
    uploaded: bool = False
    size: int | None = None
    md5: str | None = None
    ticket_id: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "filename": self.filename,
            "contentType": self.content_type,
            "fileSize": self.file_size,
            "uploaded": self.uploaded,
            "size": self.size,
            "md5": self.md5,
            "ticketId": self.ticket_id,
            "company": self.company,
            "createdAt": self.created_at,
        }


class VisibuildService:
    """Visibuild routes under ``/api/core/v1/`` and ``/oauth/token``, and the state behind them."""

    def __init__(self, s3: S3Service) -> None:
        self.s3 = s3
        self.base_url = "http://127.0.0.1"  # replaced once the server listens; used when Host is absent
        # Settable by tests: who may ask for tokens, which long-lived tokens work, how long tokens live.
        self.clients: dict[str, str] = {"sandbox-client": "sandbox-secret"}
        self.static_tokens: set[str] = {"sandbox-visibuild-token"}
        self.token_lifetime: int = 3600
        self.projects: set[str] = {"proj-1"}
        self.tokens_issued = 0
        self._lock = threading.RLock()
        self._grants: dict[str, _Grant] = {}
        self._uploads: dict[str, _Upload] = {}
        self._tickets: dict[str, dict[str, Any]] = {}
        s3.add_listener(self._on_upload)

    # -- Python API (tests and the demo seed state and look at it through these) ------------------------

    def add_project(self, project_id: str) -> None:
        with self._lock:
            self.projects.add(project_id)

    def tickets(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(ticket) for ticket in self._tickets.values()]

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._tickets[ticket_id])

    def attachment(self, key: str) -> dict[str, Any]:
        with self._lock:
            return self._uploads[key].public()

    def blob_bytes(self, key: str) -> bytes:
        blob = self.s3.store.get(BUCKET, key)
        if blob is None:
            raise KeyError(f"attachment {key} has no uploaded bytes")
        return blob.path.read_bytes()

    def revoke_tokens(self) -> None:
        """Forget every issued token (long-lived ones stay): the next call with one gets 401."""
        with self._lock:
            self._grants.clear()

    def add_foreign_attachment(self, filename: str = "theirs.jpg") -> str:
        """An uploaded attachment of another company; referencing it must be refused. Returns its key."""
        key = f"attachment/{uuid.uuid4().hex}/{filename}"
        with self._lock:
            self._uploads[key] = _Upload(
                key, filename, "image/jpeg", 0, "", OTHER_COMPANY, _now(), str(uuid.uuid4()), uploaded=True
            )
        return key

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "projects": sorted(self.projects),
                "tickets": copy.deepcopy(self._tickets),
                "attachments": {key: upload.public() for key, upload in self._uploads.items()},
                "clients": sorted(self.clients),
                "tokens_issued": self.tokens_issued,
            }

    def describe(self) -> list[str]:
        # Sandbox credentials are made up and printed on purpose, so a person can try the API.
        lines = [
            f"Visibuild: API {self.base_url}{API}/, token endpoint {self.base_url}/oauth/token",
            "  clients: " + ", ".join(f"{cid} / {secret}" for cid, secret in sorted(self.clients.items())),
            "  long-lived tokens: " + ", ".join(sorted(self.static_tokens)),
            "Visibuild tickets:",
        ]
        with self._lock:
            lines.append("  projects: " + ", ".join(sorted(self.projects)))
            for ticket in self._tickets.values():
                lines.append(f"  {ticket['id']}  {ticket['title']!r}  project {ticket['projectId']}")
                for key in ticket["attachmentKeys"]:
                    lines.append(f"    {key}")
        return lines

    # -- routes -----------------------------------------------------------------------------------------

    def register(self, router: Router) -> None:
        router.add("POST", r"^/oauth/token$", self._token)
        router.add("POST", rf"^{API}/attachments$", self._guard(self._presign))
        router.add("POST", rf"^{API}/tickets$", self._guard(self._create_ticket))
        router.add("GET", rf"^{API}/tickets/(?P<id>[^/]+)$", self._guard(self._show_ticket))
        router.add("GET", rf"^{API}/tickets/(?P<id>[^/]+)/attachments$", self._guard(self._ticket_attachments))
        router.add("*", rf"^{API}/", self._guard(lambda _request: _error(404, "not found")))

    def _guard(self, handler: Handler) -> Handler:
        """Bearer check, write scope for writes, and body-parse errors, the same for every API route."""

        def guarded(request: Request) -> Response:
            scopes = self._scopes_of(request.header("Authorization"))
            if scopes is None:
                response = _error(401, "invalid or expired access token")
                response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
                return response
            if request.method in WRITE_METHODS and "write" not in scopes:
                return json_response(403, {"message": "this access token is read-only: ask for scope 'read write'"})
            try:
                return handler(request)
            except BadRequest as error:
                return _error(400, f"malformed request body: {error}")

        return guarded

    def _scopes_of(self, authorization: str | None) -> frozenset[str] | None:
        """The scopes of a valid bearer token, or None if it is missing, unknown or expired."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if token in self.static_tokens:
            return KNOWN_SCOPES
        with self._lock:
            grant = self._grants.get(token)
            if grant is None:
                return None
            if time.time() >= grant.expires_at:
                del self._grants[token]
                return None
            return grant.scopes

    def _base_url(self, request: Request) -> str:
        # The URL must reach this same server the way the client did (the Host it sent is what S3 signs).
        host = request.header("Host")
        return f"http://{host}" if host and _HOST.match(host) else self.base_url

    # -- OAuth ------------------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        try:
            form = {k: v[0] for k, v in parse_qs(request.body().decode("utf-8"), keep_blank_values=True).items()}
        except (BadRequest, UnicodeDecodeError):
            return json_response(400, {"error": "invalid_request"})
        client_id, client_secret = self._client_credentials(request, form)
        if form.get("grant_type") != "client_credentials":
            return json_response(400, {"error": "unsupported_grant_type"})
        known = self.clients.get(client_id or "")
        if known is None or client_secret is None or not secrets.compare_digest(known, client_secret):
            return json_response(401, {"error": "invalid_client", "error_description": "client authentication failed"})
        asked = frozenset(form.get("scope", "").split())
        if asked - KNOWN_SCOPES:
            return json_response(400, {"error": "invalid_scope"})
        # Without a scope the token can read but not write, as docs/vendors.md (Visibuild) warns.
        scopes = asked or frozenset({"read"})
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._grants[token] = _Grant(scopes, time.time() + self.token_lifetime)
            self.tokens_issued += 1
        return json_response(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "scope": " ".join(sorted(scopes)),
                "created_at": int(time.time()),
            },
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
        """From the form body, or from HTTP Basic (RFC 6749 §2.3.1 allows both)."""
        authorization = request.header("Authorization") or ""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            return user, password
        return form.get("client_id"), form.get("client_secret")

    # -- attachments ------------------------------------------------------------------------------------

    def _presign(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        for name in ("filename", "contentType", "fileSize", "checksum"):
            if body.get(name) in (None, ""):
                return _error(422, f"{name} is required")
        filename, content_type, file_size, checksum = (
            body["filename"], body["contentType"], body["fileSize"], body["checksum"]
        )
        if not isinstance(filename, str) or "/" in filename or filename in (".", ".."):
            return _error(422, "filename must be a file name")
        if not isinstance(content_type, str) or "/" not in content_type:
            return _error(422, "contentType must be a MIME type")
        if not _is_size(file_size):
            return _error(422, "fileSize must be a non-negative integer")
        if file_size > MAX_FILE_SIZE:
            return _error(422, "fileSize exceeds the 5 GiB limit")
        if not _is_md5_base64(checksum):
            return _error(422, "checksum must be the base64-encoded MD5 of the file")

        key = f"attachment/{uuid.uuid4().hex}/{filename}"
        with self._lock:
            self._uploads[key] = _Upload(
                key, filename, content_type, file_size, checksum, COMPANY, _now(), str(uuid.uuid4())
            )
        signed = {"Content-Type": content_type, "Content-MD5": checksum, "Content-Length": str(file_size)}
        url = self.s3.presign(
            "PUT", self._base_url(request), BUCKET, key, expires=self.s3.settings.presign_expires, signed_headers=signed
        )
        upload = {
            "key": key,
            "filename": filename,
            "url": url,
            # Content-Length is signed too but left to the client's HTTP library, as with real S3.
            "headers": {"Content-Type": content_type, "Content-MD5": checksum},
        }
        return json_response(200, {"data": {"upload": upload}})

    def _on_upload(self, blob: BlobInfo) -> None:
        if blob.bucket != BUCKET:
            return
        with self._lock:
            upload = self._uploads.get(blob.key)
            if upload is not None:
                upload.uploaded, upload.size, upload.md5 = True, blob.size, blob.md5

    # -- tickets ----------------------------------------------------------------------------------------

    def _create_ticket(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        title, project_id, keys = body.get("title"), body.get("projectId"), body.get("attachmentKeys", [])
        if not isinstance(title, str) or not title.strip():
            return _error(422, "title is required")
        if not isinstance(project_id, str) or not project_id:
            return _error(422, "projectId is required")
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            return _error(422, "attachmentKeys must be a list of attachment keys")
        with self._lock:
            if project_id not in self.projects:
                return _error(404, f"project not found: {project_id}")
            problem = self._key_problem(keys)
            if problem is not None:
                return _error(422, problem)
            ticket_id = str(uuid.uuid4())
            ticket = {
                **copy.deepcopy(body),
                "id": ticket_id,
                "title": title,
                "projectId": project_id,
                "attachmentKeys": list(keys),
                "createdAt": _now(),
            }
            self._tickets[ticket_id] = ticket
            for key in keys:
                self._uploads[key].ticket_id = ticket_id
            return json_response(201, {"data": {"ticket": copy.deepcopy(ticket)}})

    def _key_problem(self, keys: Iterable[str]) -> str | None:
        """The first reason (in the guide's words: docs/vendors.md, Visibuild) a key cannot be linked; None if
        all can. Under the lock."""
        seen: set[str] = set()
        for key in keys:
            upload = self._uploads.get(key)
            if upload is None:
                return f"attachment key not found: {key}"
            if upload.company != COMPANY:
                return f"attachment belongs to another company: {key}"
            if not upload.uploaded or self.s3.store.get(BUCKET, key) is None:
                return f"attachment key not found: {key}"
            if upload.ticket_id is not None:
                return f"attachment already associated: {key}"
            if key in seen:
                return f"attachmentKeys lists {key} more than once"
            seen.add(key)
        return None

    def _show_ticket(self, request: Request) -> Response:
        with self._lock:
            ticket = self._tickets.get(request.params["id"])
            if ticket is None:
                return _error(404, "ticket not found")
            return json_response(200, {"data": {"ticket": copy.deepcopy(ticket)}})

    def _ticket_attachments(self, request: Request) -> Response:
        with self._lock:
            ticket = self._tickets.get(request.params["id"])
            if ticket is None:
                return _error(404, "ticket not found")
            uploads = [self._uploads[key] for key in ticket["attachmentKeys"]]
            views = [(u.id, u.key, u.filename, u.content_type, u.size, u.created_at) for u in uploads]
        base_url, expires = self._base_url(request), self.s3.settings.presign_expires
        attachments = [
            {
                "id": attachment_id,
                "key": key,
                "filename": filename,
                "contentType": content_type,
                "fileSize": size,
                "createdAt": created_at,
                "url": self.s3.presign("GET", base_url, BUCKET, key, expires=expires),
            }
            for attachment_id, key, filename, content_type, size, created_at in views
        ]
        return json_response(200, {"data": {"attachments": attachments}})
