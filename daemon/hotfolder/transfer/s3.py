"""Uploads to S3 through presigned requests: a PUT (Fulcrum, Visibuild) and a browser-form POST (SaferMe).

Both stream the file from disk with an exact Content-Length and check, before and after, that the file
is still the one hashed. A presigned URL's query string is a bearer credential, and so are a form's
policy and signature: none ever appears in an exception message or a reason (:func:`redact_url`). Every
refusal leaves as a :class:`~hotfolder.errors.StepError` whose kind tells the pipeline the remedy
(:func:`classify_s3_error`).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from hotfolder.errors import TRANSIENT_STATUSES, StepError, from_transport_error, parse_retry_after, shorten
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer.bodies import FilePart, MultipartForm
from hotfolder.transfer.files import FileIdentity, check_unchanged, iter_file, iter_file_checked, open_checked

# Only the first bytes of an answer are parsed: S3 errors are small, a proxy's page may not be.
MAX_ERROR_BODY = 64 * 1024

# S3 error codes whose meaning does not follow from the HTTP status alone.
_FILE_CHANGED_CODES = frozenset({"BadDigest", "XAmzContentSHA256Mismatch"})
_TRANSIENT_CODES = frozenset({"IncompleteBody", "RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"})
# 400 on AWS, but a fresh presign (with a fresh session token) fixes them.
_EXPIRED_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired"})

# Fields whose values are credentials: they never appear in a reason, whatever the server echoes.
_FORM_SECRET_FIELDS = frozenset(
    {"policy", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "awsaccesskeyid"}
)
# S3's answer to success_action_status: 200 and 201 are honoured, anything else means 204.
_FORM_SUCCESS_STATUSES = frozenset({200, 201})


# --- presigned PUT --------------------------------------------------------------------------
#
# The body is a generator of the file's pieces with an explicit Content-Length (without one httpx sends
# an iterator chunked, and S3 answers 411 to a chunked PUT). Not the file object: httpx would take its
# Content-Length from ``fstat``, of the file as it is *now* (not as hashed), and read it in 64 KiB pieces;
# the generator sends exactly the hashed length in CHUNK_SIZE pieces.


def redact_url(url: str) -> str:
    """``scheme://host/path``, with the query (the signature) replaced by ``?[redacted]``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # drop any user:password@
    redacted = f"{parts.scheme}://{host}{parts.path}"
    return redacted + "?[redacted]" if parts.query else redacted


def _scrub(text: str, url: str) -> str:
    """Remove the URL's query from a message, in case a library put the URL in it."""
    query = urlsplit(url).query
    return text.replace(query, "[redacted]") if query else text


def _body_headers(headers: Mapping[str, str], size: int) -> list[tuple[bytes, bytes]]:
    """The caller's (signed) headers verbatim, with framing that is ours alone to set.

    As bytes, UTF-8: a vendor echoes the file name in a header (Fulcrum's x-amz-meta-filename),
    and httpx encodes str values as ASCII, so "café.pdf" would raise UnicodeEncodeError (a
    worker error, retried forever) instead of being sent as the vendor gave it to us.
    """
    framing = {"content-length", "transfer-encoding"}
    out = [
        (name.encode("utf-8"), value.encode("utf-8"))
        for name, value in headers.items()
        if name.lower() not in framing
    ]
    out.append((b"Content-Length", str(size).encode("ascii")))
    return out


def put_presigned(
    client: httpx.Client,
    url: str,
    headers: Mapping[str, str],
    path: Path,
    expected: FileIdentity,
    *,
    what: str = "upload",
) -> str:
    """PUT ``path`` to a presigned S3 URL, streamed from disk; return the ETag without quotes.

    Raises StepError: FILE_GONE/FILE_CHANGED if the file is not (or stops being) the one
    hashed, TRANSIENT for transport errors and 5xx, EXPIRED for 403, and as
    :func:`classify_s3_error` says for the rest.
    """
    check_unchanged(path, expected)
    with open_checked(path, expected) as f:
        try:
            response = client.put(
                url, content=iter_file(f, expected.size), headers=_body_headers(headers, expected.size)
            )
        except httpx.TransportError as exc:
            error = from_transport_error(exc, f"{what} to {redact_url(url)}")
            raise StepError(error.kind, _scrub(error.outcome.reason, url)) from None
    if not response.is_success:
        raise _unless_bytes_damaged(classify_s3_error(response, what), path, expected)
    check_unchanged(path, expected)
    return response.headers.get("ETag", "").strip().strip('"')


# --- S3 errors ------------------------------------------------------------------------------


def _parse_s3_error(body: bytes) -> tuple[str, str]:
    """(Code, Message) from an S3 ``<Error>`` document; empty strings if it is not one."""
    try:
        root = ET.fromstring(body[:MAX_ERROR_BODY])
    except ET.ParseError:
        return "", ""
    fields = {child.tag.rpartition("}")[2]: (child.text or "").strip() for child in root}
    return fields.get("Code", ""), fields.get("Message", "")


def classify_s3_error(response: httpx.Response, what: str) -> StepError:
    """Turn S3's refusal of an upload into a StepError whose kind tells the pipeline the remedy.

    The reason reads e.g. "upload refused by S3: 403 AccessDenied: Request has expired".
    RGW often sends an empty Message; the Code is what matters.
    """
    status = response.status_code
    code, message = _parse_s3_error(response.content)
    detail = code or response.reason_phrase or "error"
    if message:
        detail += f": {message}"
    elif not code and response.content:
        # Not S3's XML (a proxy's page, say): a glimpse helps whoever reads the sidecar.
        # Any query string in it is cut: a proxy may echo the presigned URL back.
        glimpse = response.content[:200].decode("utf-8", "replace")
        detail += ": " + re.sub(r"\?\S*", "?[redacted]", glimpse)
    reason = shorten(f"{what} refused by S3: {status} {detail}")
    return StepError(_kind_for(status, code), reason, status, _retry_after(response, status, code))


def _unless_bytes_damaged(error: StepError, path: Path, expected: FileIdentity) -> StepError:
    """``error``, unless S3 says the bytes differ from their digest while the file has not changed.

    Then the bytes were damaged on the way (a proxy, a bad link), not rewritten: a retry that
    spends an attempt, so a path that always damages them ends in failed/ instead of looping.
    Raises FILE_CHANGED (or FILE_GONE) when the file did change.
    """
    if error.kind is not OutcomeKind.FILE_CHANGED:
        return error
    check_unchanged(path, expected)
    outcome = error.outcome
    reason = f"{outcome.reason} (the file itself did not change: damaged on the way?)"
    return StepError(OutcomeKind.TRANSIENT, reason, outcome.status, outcome.retry_after, ids=error.ids)


def _kind_for(status: int, code: str) -> OutcomeKind:
    if status == 403 or code in _EXPIRED_CODES:
        # Expired, signature mismatch, a changed signed header: only a fresh presign can help.
        return OutcomeKind.EXPIRED
    if code in _FILE_CHANGED_CODES:
        # The bytes that arrived differ from the digest we hashed: the file changed under us.
        return OutcomeKind.FILE_CHANGED
    if status >= 500 or status in TRANSIENT_STATUSES or code in _TRANSIENT_CODES:
        return OutcomeKind.TRANSIENT
    # InvalidDigest, EntityTooLarge, 411 MissingContentLength, NoSuchBucket, redirects…
    return OutcomeKind.PERMANENT


def _retry_after(response: httpx.Response, status: int, code: str) -> float | None:
    if status >= 500 or status in TRANSIENT_STATUSES or code in _TRANSIENT_CODES:
        return parse_retry_after(response.headers.get("Retry-After"))
    return None


# --- presigned POST form (S3 browser-form upload) -------------------------------------------


def _form_success_status(fields: Mapping[str, str]) -> int:
    for name, value in fields.items():
        if name.lower() == "success_action_status" and value.strip().isdigit():
            status = int(value)
            return status if status in _FORM_SUCCESS_STATUSES else 204
    return 204


def _form_key(fields: Mapping[str, str], filename: str) -> str:
    """The object key S3 stores under: the ``key`` field, with ``${filename}`` filled in."""
    key = next((value for name, value in fields.items() if name.lower() == "key"), "")
    return key.replace("${filename}", filename)


def _post_response_key(body: bytes) -> str | None:
    """``<Key>`` of a ``<PostResponse>`` document, XML entities resolved; None if there is none."""
    try:
        root = ET.fromstring(body[:MAX_ERROR_BODY])
    except ET.ParseError:
        return None
    for child in root:
        if child.tag.rpartition("}")[2] == "Key" and child.text:
            return child.text.strip()
    return None


def _scrub_form(error: StepError, url: str, fields: Mapping[str, str]) -> StepError:
    """The same error with every credential field's value (and the URL's query) cut from its reason."""
    reason = _scrub(error.outcome.reason, url)
    for name, value in fields.items():
        if name.lower() in _FORM_SECRET_FIELDS and value:
            reason = reason.replace(value, "[redacted]")
    outcome = error.outcome
    return StepError(outcome.kind, reason, outcome.status, outcome.retry_after, ids=error.ids)


def post_form(
    client: httpx.Client,
    url: str,
    fields: Mapping[str, str],
    path: Path,
    expected: FileIdentity,
    *,
    filename: str,
    content_type: str,
    what: str = "upload",
) -> str:
    """POST ``path`` to an S3 presigned-POST ``url`` as multipart/form-data; return the stored key.

    ``fields`` go first, in their order (the policy, signature, key…), and the ``file`` part last:
    S3 ignores fields after it. The success status is the one ``success_action_status`` asked for
    (201: the ``<PostResponse>``'s Key is returned, XML-unescaped; 200/204: the ``key`` field, with
    ``${filename}`` filled in). Anything else is refused as :func:`classify_s3_error` says: 403
    (failed condition, expired policy, bad signature) → EXPIRED, EntityTooLarge → PERMANENT,
    5xx → TRANSIENT. No credential field's value ever appears in a reason.
    """
    if any(name.lower() == "file" for name in fields):
        raise ValueError("the file part is added by post_form; 'file' must not be among the fields")
    success = _form_success_status(fields)
    form = MultipartForm([*fields.items(), FilePart("file", filename, content_type, expected.size)])
    headers = {"Content-Type": form.content_type, "Content-Length": str(form.length)}
    check_unchanged(path, expected)
    with open_checked(path, expected) as f:
        # The file is checked again before the closing boundary, so S3 never stores a form of mixed bytes.
        body = form.body(iter_file_checked(f, path, expected))
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            error = from_transport_error(exc, f"{what} to {redact_url(url)}")
            raise _scrub_form(error, url, fields) from None
    if response.status_code != success:
        raise _scrub_form(_unless_bytes_damaged(classify_s3_error(response, what), path, expected), url, fields)
    check_unchanged(path, expected)
    if success == 201:
        # S3 names the key it stored; should a proxy have eaten the document, the key is still the
        # one we asked for (S3's rules make it deterministic).
        return _post_response_key(response.content) or _form_key(fields, filename)
    return _form_key(fields, filename)
