"""Visibuild tickets: presign (with the MD5) → PUT to S3 → create a ticket that references the keys.

API facts (docs/vendors.md, Visibuild): the API root is
``{url}/api/core/v1/`` and answers are wrapped in ``{"data": …}``. ``POST attachments`` takes
filename, contentType, fileSize and the base64 MD5 and answers a presigned S3 PUT plus the headers
to send with it, exactly (Content-Type and Content-MD5 are signed). There is no finalize: an upload
becomes part of a record when a record is created with its key in ``attachmentKeys``. Here that
record is a ticket: one per file, or one per group folder (``inbox/<t>/<project>/<folder>/`` with a
``ticket.yaml`` that holds the ticket's fields).

Auth: a long-lived ``token``, or client credentials exchanged at ``{url}/oauth/token`` (or
``token_url``) for a bearer token that lives about an hour. That token is cached for the whole target
(every worker shares this adapter, so a lock guards it), renewed a little before it expires, and
renewed once more when the API answers 401 (it may have been revoked early): the refused request is
sent again once with the fresh token, and a second 401 is a permanent refusal. Tokens, the client
secret and presigned URLs never go into ids, reasons or logs.

Why a ticket is never created twice
-----------------------------------
Creating a ticket is the one step that cannot be repeated blindly: a second POST would make a second
ticket. If the daemon dies (or the connection drops, or the server answers 5xx) after the POST left,
we cannot tell whether the ticket exists, and there is no documented way to look a ticket up by its
attachment key. The vendor gives us the answer another way: an attachment key links to one record
only, and a create is refused whole with 422 "attachment already associated" when any key is taken.
Our keys are random, came from our own presign and were only ever sent in our own create, so:

1. before the POST, ``ctx.remember({"ticket_create_attempted": True})`` commits to the journal that
   a create may be about to happen (journal first, then act);
2. any later attempt sends the same create again. Either it succeeds (the earlier one never landed:
   still exactly one ticket), or it meets 422 "already associated", which can only mean that the
   earlier create landed. The file is then done, with ``ticket_id`` unknown and
   ``ticket_confirmed_by`` saying how we know;
3. the same 422 *without* a recorded earlier attempt means someone else used the key, and is a
   permanent failure, as are the other 422s (key not found, another company) with the vendor's words.

A group folder's keys are remembered with the attempt: should a file join the folder after a create
that then turns out to have landed, that file is not on the ticket and must not be reported as linked.
"""

from __future__ import annotations

import datetime as dt
import mimetypes
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from hotfolder import resend
from hotfolder.config import TargetSettings
from hotfolder.errors import StepError, from_response
from hotfolder.pipeline import OutcomeKind
from hotfolder.vendors.base import Ids, StepContext, Vendor, require
from hotfolder.vendors.visibuild_options import SET_BY_HOTFOLDER

API = "/api/core/v1"
DEFAULT_TOKEN_PATH = "/oauth/token"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
SCOPE = "read write"  # without "write" the token may be read-only (docs/vendors.md, Visibuild)
RENEW_MARGIN = 60.0  # seconds before expiry at which a cached token is replaced
DEFAULT_TOKEN_LIFETIME = 3600.0  # when the token answer has no usable expires_in
NO_SUCH_TICKET = "00000000-0000-0000-0000-000000000000"  # the nil UUID: no ticket has it
ATTEMPTED = "ticket_create_attempted"
ATTEMPTED_KEYS = "ticket_create_keys"
CONFIRMED_BY_422 = "422 already associated"
# Ticket fields hotfolder sets itself; a ticket.yaml must not set them.
OWN_FIELDS = tuple(SET_BY_HOTFOLDER)
_ALREADY_ASSOCIATED = re.compile(r"already\s+(?:been\s+)?associated", re.IGNORECASE)
# Only the built-in table, not /etc/mime.types: the type must not change with the host it runs on.
_MIME_TYPES = mimetypes.MimeTypes()


def content_type_of(name: str) -> str:
    guessed, _encoding = _MIME_TYPES.guess_type(name, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def render_title(template: str, ctx: StepContext) -> str:
    """The title template over the fields options.TEMPLATE_FIELDS names; the file name if it comes out empty."""
    return template.format_map(ctx.template_values()).strip() or ctx.name


class Visibuild(Vendor):
    digests = ("md5",)
    manifest_name = "ticket.yaml"

    def __init__(self, target: TargetSettings, client: httpx.Client) -> None:
        super().__init__(target, client)
        self._token_lock = threading.Lock()
        self._access_token: str | None = None
        self._renew_at = 0.0  # time.monotonic() after which the cached token is not used

    # -- the verbs ----------------------------------------------------------------------------

    def presign(self, ctx: StepContext) -> Ids:
        body = {
            "filename": ctx.name,
            "contentType": content_type_of(ctx.name),
            "fileSize": ctx.identity.size,
            "checksum": _checksum(ctx),
        }
        answer = _json(self._api("POST", f"{API}/attachments", "presign", json=body), "presign")
        upload = require(answer, "data", "upload", what="presign")
        url = require(upload, "url", what="presign")
        headers = upload.get("headers") or {}
        if not isinstance(url, str) or not isinstance(headers, dict):
            raise StepError(OutcomeKind.TRANSIENT, "presign: answer has no usable upload url and headers")
        # Memory only: the URL's query is a credential, and the headers are what its signature covers.
        self.keep_presigned_put(ctx, url, headers)
        return {"key": str(require(upload, "key", what="presign"))}

    def upload(self, ctx: StepContext) -> Ids:
        return self.upload_presigned_put(ctx)

    def link(self, ctx: StepContext) -> Ids:
        """One ticket for this file, in the project its folder names.

        A ticket takes attachment keys only when it is made, so a resend (the file changed after
        its ticket was made) makes a ticket of its own, and names the stale ticket in its ids."""
        key = _key_of(ctx)
        fields = {
            **self.target.option("ticket"),
            "title": render_title(self.target.option("title_template"), ctx),
            "projectId": _project(ctx),
            "attachmentKeys": [key],
        }
        ids = self._create_ticket(ctx, [ctx], fields, "link: create ticket")
        stale = resend.stale_values(ctx.ids, "ticket_id") or resend.stale_values(ctx.ids, "key")
        return {**ids, resend.STALE_KEPT: stale} if stale else ids

    def link_group(self, ctx: StepContext, members: Sequence[StepContext], manifest: Mapping[str, Any]) -> Ids:
        """One ticket for a whole folder: every member's key, ticket.yaml's fields over the target's
        ``ticket`` fields (a shallow merge: a manifest's ``contact`` replaces the target's whole), and
        ticket.yaml's title or else the folder's name (title_template names single files only)."""
        fields = _manifest_fields(manifest)
        title = fields.pop("title", None) or ctx.group or ctx.name
        body = {
            **self.target.option("ticket"),
            **fields,
            "title": title,
            "projectId": _project(ctx),
            "attachmentKeys": [_key_of(member) for member in members],
        }
        return self._create_ticket(ctx, members, body, f"link: create ticket for {ctx.group}/")

    # -- the online check ---------------------------------------------------------------------------

    def check(self, record: str | None) -> str:
        """Visibuild documents no read of a project or of ticket fields; what a read can show is that
        the API takes our token. With client credentials, getting one (POST /oauth/token) checks them."""
        credentials = "token" if self.target.option("token") is not None else "client credentials"
        self._api("GET", f"{API}/tickets/{NO_SUCH_TICKET}/attachments", "check: look up a ticket", ok=(200, 404))
        return (f"{credentials} accepted; projects, ticket fields and the write scope not checked "
                "(Visibuild documents no read for them)")

    # -- ticket creation, at most once ------------------------------------------------------------

    def _create_ticket(
        self, ctx: StepContext, members: Sequence[StepContext], body: dict[str, Any], what: str
    ) -> Ids:
        keys: list[str] = body["attachmentKeys"]
        earlier = [m.ids for m in (ctx, *members) if m.ids.get(ATTEMPTED)]
        sent_before = _keys_sent(earlier)
        if not earlier or (sent_before is not None and not sent_before.issuperset(keys)):
            # Journal first: after this, a crash anywhere below leaves a trace that a create may exist.
            ctx.remember({ATTEMPTED: True, ATTEMPTED_KEYS: sorted((sent_before or set()).union(keys))})
        response = self._api("POST", f"{API}/tickets", what, json=body, ok=(200, 201, 409, 422))
        if response.status_code in (200, 201):
            return {"ticket_id": _ticket_id(_json(response, what))}

        detail = self.api_error_detail(response) or ""
        if _ALREADY_ASSOCIATED.search(detail):
            if earlier:
                _refuse_late_members(sent_before, members, what)
                return {"ticket_id": None, "ticket_confirmed_by": CONFIRMED_BY_422}
            detail += " (hotfolder never tried to create a ticket with it before: it was linked elsewhere)"
        raise from_response(response, what, detail)

    # -- authentication -------------------------------------------------------------------------

    def _api(
        self, method: str, path: str, what: str, *, ok: tuple[int, ...] = (200, 201), **kwargs: Any
    ) -> httpx.Response:
        """An API call with the bearer token; with client credentials a 401 renews it and tries once more."""
        token = self._bearer()
        renewable = self.target.option("token") is None
        response = self.call(method, path, what, ok=(*ok, 401) if renewable else ok, headers=_auth(token), **kwargs)
        if response.status_code == 401 and 401 not in ok:
            # Revoked or expired early: a fresh token, then the same request once. A second 401 is final.
            self._forget_token(token)
            response = self.call(method, path, what, ok=ok, headers=_auth(self._bearer()), **kwargs)
        return response

    def _bearer(self) -> str:
        token = self.target.option("token")
        if token is not None:
            return str(token)
        # One fetch at a time: workers that find the token stale wait for the one renewing it.
        with self._token_lock:
            if self._access_token is None or time.monotonic() >= self._renew_at:
                self._access_token, lifetime = self._fetch_token()
                # A short-lived token is renewed at 90 % of its life rather than never being "fresh".
                self._renew_at = time.monotonic() + lifetime - min(RENEW_MARGIN, lifetime / 10)
            return self._access_token

    def _forget_token(self, refused: str) -> None:
        with self._token_lock:
            if self._access_token == refused:  # another worker may have renewed it already
                self._access_token = None

    def _fetch_token(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.target.option("client_id"),
            "client_secret": self.target.option("client_secret"),
            "scope": SCOPE,
        }
        url = self.target.option("token_url") or DEFAULT_TOKEN_PATH
        what = "get access token"
        answer = _json(self.call("POST", url, what, data=form, headers={"Accept": "application/json"}), what)
        if isinstance(answer, dict) and isinstance(answer.get("data"), dict):
            answer = answer["data"]
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise StepError(OutcomeKind.TRANSIENT, f"{what}: answer lacks 'access_token'")
        self.secret_found(token)  # a vendor error that echoes it back must not carry it into a sidecar
        return token, _lifetime(answer.get("expires_in"))

    def api_error_detail(self, response: httpx.Response) -> str | None:
        """Visibuild's words: ``{"errors":[{"detail"|"message"|"title"}]}``, ``{"error"}``, ``{"message"}``."""
        try:
            body = response.json()
        except ValueError:
            return response.text.strip() or None
        if not isinstance(body, dict):
            return None
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            words = [_error_words(item) for item in errors]
            return "; ".join(word for word in words if word) or None
        error = body.get("error")
        if isinstance(error, dict):
            return _error_words(error)
        if isinstance(error, str):
            description = body.get("error_description")  # OAuth's shape, from the token endpoint
            return f"{error}: {description}" if isinstance(description, str) and description else error
        message = body.get("message")
        return message if isinstance(message, str) and message else super().api_error_detail(response)


# -- small helpers ------------------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _json(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise StepError(OutcomeKind.TRANSIENT, f"{what}: answer is not JSON (HTTP {response.status_code})") from None


def _lifetime(expires_in: Any) -> float:
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return DEFAULT_TOKEN_LIFETIME
    return seconds if seconds > 0 else DEFAULT_TOKEN_LIFETIME


def _error_words(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for name in ("detail", "message", "title", "code"):
            if isinstance(item.get(name), str) and item[name]:
                return str(item[name])
    return ""


def _checksum(ctx: StepContext) -> str:
    try:
        if ctx.digests is None:
            raise ValueError("no digests")
        return ctx.digests.md5_base64
    except ValueError:
        # Hashed for another vendor, or before an upgrade: hashing again is the cure.
        raise StepError(OutcomeKind.FILE_CHANGED, f"{ctx.name}: no MD5 on record: hash again") from None


def _key_of(ctx: StepContext) -> str:
    key = ctx.ids.get("key")
    if not isinstance(key, str) or not key:
        raise StepError(OutcomeKind.NEED_PRESIGN, f"{ctx.name}: no attachment key on record: presign again")
    return key


def _project(ctx: StepContext) -> str:
    if not ctx.record:
        raise StepError(OutcomeKind.PERMANENT, f"{ctx.name}: not in a project folder (inbox/<target>/<project-id>/)")
    return ctx.record


def _ticket_id(answer: Any) -> Any:
    """``{"data":{"ticket":{"id"}}}`` as documented, or ``{"data":{"id"}}``; None if a 2xx names no id."""
    data = answer.get("data", answer) if isinstance(answer, dict) else {}
    ticket = data.get("ticket", data) if isinstance(data, dict) else {}
    return ticket.get("id") if isinstance(ticket, dict) else None


def _keys_sent(earlier: Sequence[Mapping[str, Any]]) -> set[str] | None:
    """Every key some earlier create was sent with; None if an attempt was recorded without its keys."""
    sent: set[str] = set()
    for ids in earlier:
        recorded = ids.get(ATTEMPTED_KEYS)
        if not isinstance(recorded, list):
            return None
        sent.update(str(key) for key in recorded)
    return sent


def _refuse_late_members(sent_before: set[str] | None, members: Sequence[StepContext], what: str) -> None:
    """An earlier create landed, but it held only the keys it was sent with: a file that joined the
    folder afterwards is not on that ticket and must not be reported as linked."""
    if sent_before is None:
        return  # an attempt recorded without its keys: trust it, as the bare rule says
    late = sorted(m.name for m in members if m.ids.get("key") not in sent_before)
    if late:
        raise StepError(
            OutcomeKind.PERMANENT,
            f"{what}: the ticket was created earlier without {', '.join(late)} (added to the folder after "
            "the first attempt); Visibuild cannot add files to an existing ticket, so these were not linked",
        )


def _manifest_fields(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """ticket.yaml as ticket fields: own fields refused, YAML dates made ISO text, JSON-only values."""
    taken = [name for name in OWN_FIELDS if name in manifest]
    if taken:
        raise StepError(
            OutcomeKind.PERMANENT,
            f"ticket.yaml: {', '.join(taken)} is set by hotfolder (the project folder and the uploaded files)",
        )
    fields = {str(name): _jsonable(value, f"ticket.yaml: {name}") for name, value in manifest.items()}
    title = fields.get("title")
    if title is not None and not isinstance(title, str | int | float):
        raise StepError(OutcomeKind.PERMANENT, "ticket.yaml: title must be text")
    if title is not None:
        fields["title"] = str(title).strip()
    return fields


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON can carry it; YAML's dates become ISO 8601 text, other types are refused."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(item, where) for item in value]
    if isinstance(value, dict):
        return {str(name): _jsonable(item, f"{where}.{name}") for name, item in value.items()}
    raise StepError(OutcomeKind.PERMANENT, f"{where}: a {type(value).__name__} cannot be sent as a ticket field")
