"""Streaming transfers: one-pass digests and presigned S3 uploads, with memory flat at any file size.

Rules this module keeps:

* A file is never held in memory whole. Reads are ``CHUNK_SIZE`` at a time, and the upload body
  is a generator of those chunks.
* A file is never followed through a symlink (``O_NOFOLLOW``) and only regular files are read,
  so a link planted in the inbox cannot make us upload ``/etc/shadow``.
* What was hashed is what is sent: each step checks the file's (size, mtime) against the
  :class:`FileIdentity` recorded when it was hashed, before and after touching it, and says
  ``FILE_CHANGED`` otherwise, so the pipeline hashes again instead of uploading mixed bytes.
* A presigned URL's query string is a bearer credential. It never appears in an exception
  message or a reason: :func:`redact_url` is used wherever a URL is named.
* Every failure leaves as a :class:`~hotfolder.errors.StepError` whose kind tells the pipeline
  what to do (retry, presign again, hash again, give up).

Why a generator body with an explicit Content-Length: httpx sends ``Transfer-Encoding: chunked``
for an iterator body unless the caller sets Content-Length (then it drops the chunked header,
httpx ``Request._prepare``), and S3 answers 411 to a chunked PUT. A file-object body would get a
Content-Length from ``fstat`` instead, but of the file as it is *now* (not as hashed) and read in
64 KiB pieces; the generator sends exactly the hashed length in 1 MiB pieces.

The three upload styles the vendors need all live here and all stream from disk with an exact
Content-Length: :func:`put_presigned` (Fulcrum, Visibuild), :func:`post_form` (S3 presigned POST,
file part last: SaferMe) and :func:`base64_json_body` (EspoCRM's inline data URL, generated from
the file in multiple-of-3 reads so the pieces join into valid base64).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

import httpx

from hotfolder.errors import TRANSIENT_STATUSES, StepError, from_transport_error, parse_retry_after, shorten
from hotfolder.pipeline import OutcomeKind

CHUNK_SIZE = 1024 * 1024
SUPPORTED_DIGESTS = ("md5", "sha256")
# Only the first bytes of an error answer are parsed: S3 errors are small, a proxy's page may not be.
MAX_ERROR_BODY = 64 * 1024

# S3 error codes whose meaning does not follow from the HTTP status alone.
_FILE_CHANGED_CODES = frozenset({"BadDigest", "XAmzContentSHA256Mismatch"})
_TRANSIENT_CODES = frozenset({"IncompleteBody", "RequestTimeout", "SlowDown", "InternalError", "ServiceUnavailable"})
# 400 on AWS, but a fresh presign (with a fresh session token) fixes them.
_EXPIRED_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired"})


@dataclass(frozen=True)
class FileIdentity:
    """What we believe identifies a file's content without reading it.

    Size and mtime catch a writer; ctime catches one that put the mtime back (``touch -r``, a copy
    that keeps times) and the inode a different file renamed over the path with the same size and
    times. ctime and inode are None where they were not recorded (jobs journalled before they
    were); an unknown part is not compared.
    """

    size: int
    mtime_ns: int
    ctime_ns: int | None = None
    ino: int | None = None

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino)

    def differences(self, now: FileIdentity) -> list[str]:
        """What differs in ``now`` from this identity, in words; empty when it is the same file."""
        found = []
        for name in ("size", "mtime_ns", "ctime_ns", "ino"):
            mine, theirs = getattr(self, name), getattr(now, name)
            if mine is not None and theirs is not None and mine != theirs:
                found.append(f"{name} {mine} → {theirs}")
        return found

    def matches(self, now: FileIdentity) -> bool:
        return not self.differences(now)


@dataclass(frozen=True)
class FileDigests:
    """Digests (lower-case hex) of the file as it was when ``identity`` was observed."""

    identity: FileIdentity
    md5: str | None
    sha256: str | None

    @property
    def md5_base64(self) -> str:
        """Base64 of the binary MD5: the form Content-MD5 and Visibuild's checksum want."""
        if self.md5 is None:
            raise ValueError("the MD5 was not computed for this file")
        return base64.b64encode(bytes.fromhex(self.md5)).decode("ascii")

    def as_dict(self) -> dict[str, Any]:
        return {
            "size": self.identity.size,
            "mtime_ns": self.identity.mtime_ns,
            "ctime_ns": self.identity.ctime_ns,
            "ino": self.identity.ino,
            "md5": self.md5,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileDigests:
        return cls(
            identity=FileIdentity(
                size=int(d["size"]), mtime_ns=int(d["mtime_ns"]), ctime_ns=_int_or_none(d.get("ctime_ns")),
                ino=_int_or_none(d.get("ino")),
            ),
            md5=d.get("md5"),
            sha256=d.get("sha256"),
        )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


# --- opening and checking files -------------------------------------------------------------


def _open_error(path: Path, exc: OSError) -> StepError:
    """Map an OSError from opening or stat-ing ``path`` to what it means for the job."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return StepError(OutcomeKind.FILE_GONE, f"{path.name}: file is gone")
    if exc.errno == errno.ELOOP:
        return StepError(OutcomeKind.PERMANENT, f"{path.name}: is a symbolic link, refused")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StepError(OutcomeKind.PERMANENT, f"{path.name}: permission denied")
    # EIO, ESTALE, ENOMEM…: a network mount hiccup is worth another try.
    return StepError(OutcomeKind.TRANSIENT, f"{path.name}: {exc.strerror or exc}")


def _open_regular(path: Path) -> tuple[int, os.stat_result]:
    """Open without following a final symlink; refuse anything but a regular file.

    O_NONBLOCK keeps a FIFO dropped into the inbox from blocking the open forever; it changes
    nothing for regular files.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _open_error(path, exc) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise _open_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise StepError(OutcomeKind.PERMANENT, f"{path.name}: not a regular file, refused")
    return fd, st


def _changed(path: Path, expected: FileIdentity, now: FileIdentity) -> StepError:
    what = ", ".join(expected.differences(now)) or "its bytes moved while it was read"
    return StepError(OutcomeKind.FILE_CHANGED, f"{path.name}: file changed ({what})")


def check_unchanged(path: Path, expected: FileIdentity) -> None:
    """Raise FILE_GONE if ``path`` is missing, FILE_CHANGED if it is no longer the file we hashed."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        raise _open_error(path, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise StepError(OutcomeKind.FILE_CHANGED, f"{path.name}: no longer a regular file")
    now = FileIdentity.of(st)
    if not expected.matches(now):
        raise _changed(path, expected, now)


def open_checked(path: Path, expected: FileIdentity) -> BinaryIO:
    """Open ``path`` for reading (no symlinks) only if it still matches ``expected``.

    The identity is taken from the open descriptor, so a swap between the check and the
    open cannot slip in. Unbuffered: reads go straight to the caller's chunks, no extra copy.
    """
    fd, st = _open_regular(path)
    now = FileIdentity.of(st)
    if not expected.matches(now):
        os.close(fd)
        raise _changed(path, expected, now)
    return cast(BinaryIO, open(fd, "rb", buffering=0))  # the caller closes it


def iter_file(f: BinaryIO, size: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield exactly ``size`` bytes from ``f``; FILE_CHANGED if it ends early.

    Bytes beyond ``size`` are never read: the length was promised in Content-Length, and a
    file that grew is caught by the caller's check after the transfer.
    """
    remaining = size
    while remaining > 0:
        data = f.read(min(chunk_size, remaining))
        if not data:
            raise StepError(
                OutcomeKind.FILE_CHANGED,
                f"file shrank while reading: ended after {size - remaining} of {size} bytes",
            )
        remaining -= len(data)
        yield data


# --- digests --------------------------------------------------------------------------------


def hash_file(path: Path, algorithms: Collection[str] = SUPPORTED_DIGESTS) -> FileDigests:
    """Compute every requested digest of ``path`` in ONE read pass.

    The identity returned is the one observed before reading, and it is checked again after
    (on the descriptor, for in-place writes, and on the path, for a replacement by rename).
    """
    unknown = set(algorithms) - set(SUPPORTED_DIGESTS)
    if unknown:
        raise ValueError(f"unsupported digest(s): {sorted(unknown)}")
    hashers = {name: hashlib.new(name) for name in SUPPORTED_DIGESTS if name in algorithms}

    fd, before = _open_regular(path)
    identity = FileIdentity.of(before)
    with open(fd, "rb", buffering=0) as f:
        total = _read_into_hashers(path, f, list(hashers.values()), identity.size)
        after = FileIdentity.of(os.fstat(fd))
    if not identity.matches(after) or total != identity.size:
        raise _changed(path, identity, after)
    check_unchanged(path, identity)

    return FileDigests(
        identity=identity,
        md5=hashers["md5"].hexdigest() if "md5" in hashers else None,
        sha256=hashers["sha256"].hexdigest() if "sha256" in hashers else None,
    )


def _read_into_hashers(path: Path, f: Any, hashers: list[Any], size: int) -> int:
    """Feed the whole file to every hasher; returns the byte count. One buffer, reused.

    Stops once more than ``size`` bytes came: the file grew, and a writer appending faster than we
    read would otherwise keep this loop going for as long as it writes.
    """
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    total = 0
    while True:
        try:
            n = f.readinto(buf)
        except OSError as exc:
            raise _open_error(path, exc) from None
        if not n:
            return total
        chunk = view[:n]
        for h in hashers:
            h.update(chunk)  # hashlib releases the GIL for large updates
        total += n
        if total > size:
            return total


# --- presigned PUT --------------------------------------------------------------------------


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


# --- streamed base64 JSON (EspoCRM: the file inline in a JSON body) ----------------------------
#
# EspoCRM takes a file as a base64 data URI inside a JSON document, ~4/3 of the file's size.
# The body is built while it is sent: the JSON before the file's value, the file encoded piece
# by piece, the JSON after it. Base64 turns every 3 bytes into 4 characters, so pieces encoded
# from multiples of 3 bytes concatenate into one valid encoding (only the last piece is padded),
# and the total length, 4 * ceil(size / 3), is known before a byte is read: the request carries
# a Content-Length, as every server (and the chunk-less PHP behind EspoCRM) expects.


def base64_length(size: int) -> int:
    """Characters of the padded base64 encoding of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def data_uri_prefix(mime: str) -> bytes:
    """``data:<mime>;base64,``: what precedes the encoded bytes in EspoCRM's ``file`` value."""
    return f"data:{mime};base64,".encode("ascii")


def _base64_pieces(f: BinaryIO, size: int, chunk_size: int) -> Iterator[bytes]:
    """Base64 of the next ``size`` bytes of ``f``, in pieces that concatenate to one encoding.

    Reads are rounded down to a multiple of 3; a short read (possible on network mounts) leaves
    a remainder that is carried into the next piece, so no piece but the last is ever padded.
    """
    step = max(3, chunk_size - chunk_size % 3)
    carry = b""
    for data in iter_file(f, size, step):
        if carry:
            data = carry + data
        whole = len(data) - len(data) % 3
        carry = data[whole:]
        if whole:
            yield base64.b64encode(memoryview(data)[:whole])
    if carry:
        yield base64.b64encode(carry)


def base64_json_body(
    prefix: bytes,
    path: Path,
    expected: FileIdentity,
    suffix: bytes,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> tuple[Iterator[bytes], int]:
    """A body ``prefix + base64(file) + suffix`` to stream, and its exact length for Content-Length.

    ``prefix`` ends inside a JSON string (``…"file":"data:<mime>;base64,``) and ``suffix`` closes
    it (``"}``). The file is checked now, so a changed file fails before any request is made;
    it is opened only when the body is first read, and closed however the sending ends. A file
    that shrinks while read, or whose size or mtime differs at the end, raises FILE_CHANGED
    before the suffix goes out, so the server never receives a complete document of mixed bytes.
    """
    check_unchanged(path, expected)
    length = len(prefix) + base64_length(expected.size) + len(suffix)
    return _base64_json_stream(prefix, path, expected, suffix, chunk_size), length


def _base64_json_stream(
    prefix: bytes, path: Path, expected: FileIdentity, suffix: bytes, chunk_size: int
) -> Iterator[bytes]:
    with open_checked(path, expected) as f:
        yield prefix
        yield from _base64_pieces(f, expected.size, chunk_size)
        now = FileIdentity.of(os.fstat(f.fileno()))
        if not expected.matches(now):
            raise _changed(path, expected, now)
    yield suffix


def base64_chunk_body(
    f: BinaryIO, size: int, mime: str, *, chunk_size: int = CHUNK_SIZE
) -> tuple[Iterator[bytes], int]:
    """One chunk of a chunked upload, ``data:<mime>;base64,<next size bytes of f>``, and its length.

    Reads from ``f``'s current position, so consecutive calls walk the file chunk by chunk; the
    chunk itself is streamed too, so a large ``chunk_size`` does not cost memory either.
    """
    prefix = data_uri_prefix(mime)
    return _prefixed(prefix, _base64_pieces(f, size, chunk_size)), len(prefix) + base64_length(size)


def _prefixed(prefix: bytes, pieces: Iterator[bytes]) -> Iterator[bytes]:
    yield prefix
    yield from pieces


# --- presigned POST form (S3 browser-form upload) -------------------------------------------
#
# Why we frame the multipart body ourselves instead of httpx's ``data=``/``files=``: httpx does put
# data fields before files (so ``file`` would come last) and streams a file object in 64 KiB reads,
# but it takes the Content-Length from ``fstat`` of the file as it is *now* and falls back to
# chunked encoding when it cannot, which S3 and RGW refuse (411). Framing it here sends exactly the
# hashed size, in 1 MiB pieces, with a Content-Length known before the first byte goes out.

# Fields whose values are credentials: they never appear in a reason, whatever the server echoes.
_FORM_SECRET_FIELDS = frozenset(
    {"policy", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "awsaccesskeyid"}
)
# S3's answer to success_action_status: 200 and 201 are honoured, anything else means 204.
_FORM_SUCCESS_STATUSES = frozenset({200, 201})


def _form_param(value: str) -> str:
    """A quoted Content-Disposition parameter, escaped as browsers do (WHATWG multipart rules)."""
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _form_head(boundary: str, fields: Mapping[str, str], filename: str, content_type: str) -> bytes:
    """Every field part in the caller's order, then the headers of the ``file`` part (always last)."""
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_form_param(name)}"\r\n\r\n{value}\r\n'
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_form_param(filename)}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    return "".join(parts).encode("utf-8")


def _form_body(path: Path, expected: FileIdentity, f: BinaryIO, head: bytes, tail: bytes) -> Iterator[bytes]:
    """head, the file, tail; a file changed under us fails before the closing boundary goes out, so
    S3 never receives a complete form of mixed bytes."""
    yield head
    yield from iter_file(f, expected.size)
    now = FileIdentity.of(os.fstat(f.fileno()))
    if not expected.matches(now):
        raise _changed(path, expected, now)
    yield tail


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
    boundary = os.urandom(16).hex()  # 128 random bits: never found inside the file by chance
    head = _form_head(boundary, fields, filename, content_type)
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + expected.size + len(tail)),
    }
    check_unchanged(path, expected)
    with open_checked(path, expected) as f:
        try:
            response = client.post(url, content=_form_body(path, expected, f, head, tail), headers=headers)
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
