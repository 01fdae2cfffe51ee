"""A small S3 look-alike: SigV4 query presigning and verification, and a blob store on disk.

Theory of operation
-------------------
Vendors hand the daemon presigned URLs; the daemon PUTs (later: POSTs a form) to them. This module plays
the S3 side closely enough that the daemon's upload step meets the same refusals it would meet in the
wild (see docs/vendors.md, S3): expiry, signature mismatch, Content-MD5 checks, missing or short bodies.

* ``SigV4`` signs and verifies with one sandbox-internal secret. It is real SigV4 (canonical request,
  string to sign, derived key), so a URL presigned by botocore with the same credentials verifies here,
  and ``signature()`` is the primitive a presigned POST policy will need later.
* ``BlobStore`` keeps objects as files named by a hash of (bucket, key): keys may hold any characters and
  must never become file-system paths. Bodies are streamed into a temp file in the same directory and
  renamed into place only once complete and verified, so a failed upload never leaves a partial object.
* ``S3Service`` binds both to HTTP routes under ``/s3/<bucket>/<key>`` and tells listeners (the vendor
  simulators) when an object lands.

Nothing here logs a query string: credentials and signatures stay out of every log and error body.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from .server import Request, Response, Router

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_PRESIGN_EXPIRES = 604800  # seven days, the S3 ceiling
CLOCK_SKEW = 15 * 60  # S3 refuses requests dated this far in the future
READ_SIZE = 1024 * 1024  # bodies are streamed in 1 MiB reads so memory stays flat for multi-GiB files


class S3Error(Exception):
    """An S3 refusal: rendered as the XML ``<Error>`` document S3 sends."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def to_xml(self) -> bytes:
        request_id = secrets.token_hex(8).upper()
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """Percent-encode as SigV4 wants: everything but unreserved characters (and '/' in paths)."""
    return quote(value, safe="/~" if keep_slash else "~")


def _normalize_header_value(value: str) -> str:
    # SigV4 trims header values and folds runs of spaces into one.
    return " ".join(value.strip().split())


def _format_amz_date(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime(AMZ_DATE_FORMAT)


class SigV4:
    """SigV4 for the S3 service with a single access key. Stdlib only (hmac, hashlib)."""

    def __init__(
        self,
        access_key: str = "SANDBOXACCESSKEY",
        secret_key: str | None = None,
        region: str = "us-east-1",
        service: str = "s3",
    ) -> None:
        self.access_key = access_key
        # A fresh secret per sandbox: URLs from an earlier run must not verify by accident.
        self._secret_key = secret_key if secret_key is not None else secrets.token_urlsafe(30)
        self.region = region
        self.service = service

    @property
    def secret_key(self) -> str:
        """For tests that presign with an independent client (botocore) against this sandbox."""
        return self._secret_key

    def scope(self, datestamp: str) -> str:
        return f"{datestamp}/{self.region}/{self.service}/aws4_request"

    def signing_key(self, datestamp: str) -> bytes:
        key = hmac.new(f"AWS4{self._secret_key}".encode(), datestamp.encode(), hashlib.sha256).digest()
        for part in (self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key

    def signature(self, string_to_sign: str, datestamp: str) -> str:
        """HMAC of any string to sign; a POST policy signs its base64 policy with exactly this."""
        return hmac.new(self.signing_key(datestamp), string_to_sign.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def canonical_query(params: list[tuple[str, str]]) -> str:
        encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in params if k != "X-Amz-Signature")
        return "&".join(f"{k}={v}" for k, v in encoded)

    @staticmethod
    def canonical_request(
        method: str,
        canonical_uri: str,
        params: list[tuple[str, str]],
        headers: Mapping[str, str],
        signed_headers: list[str],
    ) -> str:
        canonical_headers = "".join(
            f"{name}:{_normalize_header_value(headers[name])}\n" for name in signed_headers
        )
        return "\n".join(
            [
                method.upper(),
                canonical_uri,
                SigV4.canonical_query(params),
                canonical_headers,
                ";".join(signed_headers),
                UNSIGNED_PAYLOAD,
            ]
        )

    def string_to_sign(self, amz_date: str, canonical_request: str) -> str:
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        return "\n".join([ALGORITHM, amz_date, self.scope(amz_date[:8]), digest])

    def presign(
        self,
        method: str,
        base_url: str,
        path: str,
        host: str,
        *,
        expires: int,
        headers: Mapping[str, str] | None = None,
        now: dt.datetime | None = None,
    ) -> str:
        """A presigned URL for ``base_url + path``. ``path`` is the already-encoded URI path;
        ``headers`` are extra headers to sign (``host`` is always signed)."""
        when = now or dt.datetime.now(dt.UTC)
        amz_date = _format_amz_date(when)
        all_headers = {"host": host, **{k.lower(): v for k, v in (headers or {}).items()}}
        signed = sorted(all_headers)
        params = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{self.access_key}/{self.scope(amz_date[:8])}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", ";".join(signed)),
        ]
        canonical = self.canonical_request(method, path, params, all_headers, signed)
        signature = self.signature(self.string_to_sign(amz_date, canonical), amz_date[:8])
        query = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in params)
        return f"{base_url}{path}?{query}&X-Amz-Signature={signature}"

    def verify(
        self,
        method: str,
        raw_path: str,
        query_string: str,
        headers: Mapping[str, str],
        *,
        now: dt.datetime | None = None,
    ) -> None:
        """Raise ``S3Error`` unless the request carries a valid, unexpired SigV4 query signature.

        ``raw_path`` is the path exactly as it came on the wire: S3 signs the encoded path, not a
        re-encoding of it. ``headers`` maps lower-case names to values.
        """
        params = parse_qsl(query_string, keep_blank_values=True)
        values: dict[str, str] = {}
        for key, value in params:
            values.setdefault(key, value)
        required = (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
        )
        if not all(name in values for name in required):
            raise S3Error(403, "AccessDenied", "Query-string authentication requires the X-Amz-* parameters")
        if values["X-Amz-Algorithm"] != ALGORITHM:
            raise S3Error(
                400, "AuthorizationQueryParametersError", "X-Amz-Algorithm must be AWS4-HMAC-SHA256"
            )
        amz_date = values["X-Amz-Date"]
        try:
            signed_at = dt.datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=dt.UTC)
            expires = int(values["X-Amz-Expires"])
        except ValueError:
            raise S3Error(
                400, "AuthorizationQueryParametersError", "malformed X-Amz-Date or X-Amz-Expires"
            ) from None
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
            raise S3Error(
                400, "AuthorizationQueryParametersError", "X-Amz-Expires must be between 1 and 604800 seconds"
            )
        credential = values["X-Amz-Credential"].split("/")
        if len(credential) != 5 or credential[0] != self.access_key:
            raise S3Error(403, "InvalidAccessKeyId", "The access key id does not exist in our records.")
        if credential[1:] != [amz_date[:8], self.region, self.service, "aws4_request"]:
            raise S3Error(400, "AuthorizationQueryParametersError", "Credential scope does not match")

        current = now or dt.datetime.now(dt.UTC)
        age = (current - signed_at).total_seconds()
        if age > expires:
            raise S3Error(403, "AccessDenied", "Request has expired")
        if age < -CLOCK_SKEW:
            raise S3Error(403, "AccessDenied", "Request is not valid yet")

        signed_headers = values["X-Amz-SignedHeaders"].split(";")
        if "host" not in signed_headers or any(name not in headers for name in signed_headers):
            raise S3Error(403, "SignatureDoesNotMatch", "A signed header is missing from the request")
        canonical = self.canonical_request(method, raw_path, params, headers, signed_headers)
        expected = self.signature(self.string_to_sign(amz_date, canonical), amz_date[:8])
        if not hmac.compare_digest(expected, values["X-Amz-Signature"]):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )


@dataclass(frozen=True)
class BlobInfo:
    bucket: str
    key: str
    size: int
    md5: str  # hex
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* headers, lower-case names

    @property
    def etag(self) -> str:
        return f'"{self.md5}"'


class BlobStore:
    """Objects on disk under ``root/<bucket>/``, indexed in memory. Writes go temp file → rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._blobs: dict[tuple[str, str], BlobInfo] = {}

    def _bucket_dir(self, bucket: str) -> Path:
        # The bucket name is hashed too: it comes from a URL and must not steer a path.
        directory = self.root / hashlib.sha256(bucket.encode()).hexdigest()[:16]
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def new_temp(self, bucket: str) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(prefix=".upload-", dir=self._bucket_dir(bucket))
        return fd, Path(name)

    def commit(
        self, temp: Path, bucket: str, key: str, size: int, md5: str, metadata: dict[str, str]
    ) -> BlobInfo:
        final = self._bucket_dir(bucket) / hashlib.sha256(key.encode()).hexdigest()
        os.replace(temp, final)  # atomic: a reader sees the old object or the new one, never a mix
        info = BlobInfo(bucket, key, size, md5, final, metadata)
        with self._lock:
            self._blobs[(bucket, key)] = info
        return info

    def get(self, bucket: str, key: str) -> BlobInfo | None:
        with self._lock:
            return self._blobs.get((bucket, key))

    def all(self) -> list[BlobInfo]:
        with self._lock:
            return list(self._blobs.values())


@dataclass
class S3Settings:
    """Knobs shared by every vendor that hands out URLs for this S3; changeable while serving."""

    presign_expires: int = 900  # lifetime of the URLs the vendor simulators hand out, in seconds
    max_object_size: int = 5 * 1024**3
    # When True, presigned URLs sign x-amz-meta-filename too, so a client that drops or alters it fails.
    strict_meta: bool = False


Listener = Callable[[BlobInfo], None]
_S3_PATH = re.compile(r"^/s3/(?P<bucket>[^/]+)/(?P<key>.+)$")


class S3Service:
    """Path-style S3 under ``/s3/<bucket>/<key>``: presigned PUT and GET, plus helpers to presign."""

    prefix = "/s3"

    def __init__(
        self, data_dir: Path, settings: S3Settings | None = None, signer: SigV4 | None = None
    ) -> None:
        self.settings = settings or S3Settings()
        self.signer = signer or SigV4()
        self.store = BlobStore(data_dir)
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Called after each successful PUT, from the server thread that handled it."""
        self._listeners.append(listener)

    def register(self, router: Router) -> None:
        router.add("PUT", _S3_PATH.pattern, self._put)
        router.add("GET", _S3_PATH.pattern, self._get)
        router.add("HEAD", _S3_PATH.pattern, self._get)

    # -- presigning, for the vendor simulators --------------------------------------------------------

    def object_path(self, bucket: str, key: str) -> str:
        return f"{self.prefix}/{uri_encode(bucket)}/{uri_encode(key, keep_slash=True)}"

    def presign(
        self,
        method: str,
        base_url: str,
        bucket: str,
        key: str,
        *,
        expires: int,
        signed_headers: Mapping[str, str] | None = None,
    ) -> str:
        """A presigned URL for an object on this server. ``base_url`` is e.g. ``http://127.0.0.1:8787``:
        its host part is what the client will send as ``Host``, so it is what gets signed."""
        host = base_url.split("://", 1)[-1].rstrip("/")
        return self.signer.presign(
            method,
            base_url.rstrip("/"),
            self.object_path(bucket, key),
            host,
            expires=expires,
            headers=signed_headers,
        )

    # -- HTTP handlers --------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        self.signer.verify(request.method, request.raw_path, request.query_string, request.header_map())

    def _put(self, request: Request) -> Response:
        try:
            return self._put_checked(request)
        except S3Error as error:
            return s3_error_response(error)

    def _put_checked(self, request: Request) -> Response:
        self._authorize(request)
        if request.content_length is None:
            raise S3Error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
        if request.content_length > self.settings.max_object_size:
            raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        expected_md5 = _parse_content_md5(request.header("content-md5"))
        bucket, key = request.params["bucket"], request.params["key"]

        fd, temp = self.store.new_temp(bucket)
        committed = False
        try:
            digest = hashlib.md5(usedforsecurity=False)
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := request.read(READ_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if request.truncated or size != request.content_length:
                raise S3Error(400, "IncompleteBody", "The body is shorter than its Content-Length")
            if expected_md5 is not None and digest.digest() != expected_md5:
                raise S3Error(
                    400, "BadDigest", "The Content-MD5 you specified did not match what we received"
                )
            metadata = {k: v for k, v in request.header_map().items() if k.startswith("x-amz-meta-")}
            info = self.store.commit(temp, bucket, key, size, digest.hexdigest(), metadata)
            committed = True
        finally:
            if not committed:
                temp.unlink(missing_ok=True)
        for listener in list(self._listeners):
            listener(info)
        return Response(200, headers={"ETag": info.etag})

    def _get(self, request: Request) -> Response:
        try:
            self._authorize(request)
            info = self.store.get(request.params["bucket"], request.params["key"])
            if info is None:
                raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        except S3Error as error:
            return s3_error_response(error)
        headers = {"ETag": info.etag, "Content-Type": "application/octet-stream"}
        return Response(200, headers=headers, file=info.path, file_size=info.size)


def _parse_content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise S3Error(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
    return raw


def s3_error_response(error: S3Error) -> Response:
    return Response(error.status, body=error.to_xml(), headers={"Content-Type": "application/xml"})


# -- presigned POST (browser-form uploads) ------------------------------------------------------------------
#
# What docs/vendors.md (S3) says S3 enforces on a presigned POST, played here for vendors that hand out
# forms (SaferMe): the body is multipart/form-data with a Content-Length (chunked → 411); fields after
# ``file`` are ignored; the base64 JSON policy is signed with SigV4 (``signature()`` over the policy
# text) and expires; its conditions are exact (``{"f": "v"}``, ``["eq", "$f", "v"]``), prefix
# (``["starts-with", "$f", "p"]``) or ``["content-length-range", min, max]``; every field but ``file``,
# ``policy``, ``x-amz-signature`` and ``x-ignore-*`` must be covered by a condition. A failed condition,
# an uncovered field or an expired policy → 403 AccessDenied; a bad signature → 403
# SignatureDoesNotMatch; out of range → 400 EntityTooLarge / EntityTooSmall. ``${filename}`` in ``key``
# becomes the file part's filename. ``success_action_status`` 201 → 201 with a ``<PostResponse>``, 200 →
# 200 empty, otherwise 204.
#
# Choices where S3's documentation is silent: a condition on a field the form lacks fails (so a policy's
# ``starts-with $Content-Type ""`` makes Content-Type required, as SaferMe's ``required_fields`` says);
# conditions are checked against the fields as sent, before ``${filename}`` is filled in; field names
# match case-insensitively; a field given twice is refused; ``success_action_redirect`` is not supported.
#
# The body is parsed as it arrives: fields (at most ``POST_FIELDS_LIMIT`` bytes of them) are checked
# before a byte of the file is stored, and the file part streams to a temp file in ``READ_SIZE`` pieces,
# so memory stays flat for any file size.

# Imports of this appended block; kept here so the block stays one contiguous addition to the module.

POST_FIELDS_LIMIT = 20 * 1024  # S3: MaxPostPreDataLengthExceeded beyond this before the file part
MAX_PART_HEADERS = 8 * 1024
_UNCOVERED_OK = frozenset({"file", "policy", "x-amz-signature"})
# A quoted value has no backslash escapes: browsers send a backslash as it is (a quote as %22), and RGW
# reads it so.
_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("[^"]*"|[^;]*)')
_POST_PATH = re.compile(r"^/s3/(?P<bucket>[^/]+)/?$")


def presign_post(
    s3: S3Service,
    base_url: str,
    bucket: str,
    conditions: list[object],
    *,
    expires: int,
    now: dt.datetime | None = None,
) -> tuple[str, dict[str, str]]:
    """A presigned POST form for ``bucket``: the URL and the signed fields (policy, credential, date,
    algorithm, signature). ``conditions`` come after the bucket's; the credential, algorithm and date
    conditions are added here. The caller adds its own fields (key, Content-Type…) and covers them."""
    when = now or dt.datetime.now(dt.UTC)
    amz_date = _format_amz_date(when)
    credential = f"{s3.signer.access_key}/{s3.signer.scope(amz_date[:8])}"
    expiration = (when + dt.timedelta(seconds=expires)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    document = {
        "expiration": expiration,
        "conditions": [
            {"bucket": bucket},
            *conditions,
            {"x-amz-credential": credential},
            {"x-amz-algorithm": ALGORITHM},
            {"x-amz-date": amz_date},
        ],
    }
    policy = base64.b64encode(json.dumps(document).encode()).decode("ascii")
    url = f"{base_url.rstrip('/')}{S3Service.prefix}/{uri_encode(bucket)}"
    return url, {
        "policy": policy,
        "x-amz-credential": credential,
        "x-amz-algorithm": ALGORITHM,
        "x-amz-date": amz_date,
        "x-amz-signature": s3.signer.signature(policy, amz_date[:8]),
    }


@dataclass
class FormPart:
    name: str
    filename: str | None


def _malformed(message: str = "The body of your POST request is not well-formed multipart/form-data.") -> S3Error:
    return S3Error(400, "MalformedPOSTRequest", message)


def _unquote_param(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    # Browsers (and hotfolder) write a quote or line break in a name as %22, %0D, %0A.
    return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _parse_part_headers(block: bytes) -> FormPart:
    name: str | None = None
    filename: str | None = None
    for raw in block.split(b"\r\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        header, _, value = line.partition(":")
        if header.strip().lower() != "content-disposition":
            continue  # a part's Content-Type is not what S3 stores: the Content-Type *field* is
        if value.split(";", 1)[0].strip().lower() != "form-data":
            raise _malformed()
        for match in _DISPOSITION_PARAM.finditer(value):
            if match.group(1).lower() == "name":
                name = _unquote_param(match.group(2))
            elif match.group(1).lower() == "filename":
                filename = _unquote_param(match.group(2))
    if name is None:
        raise _malformed()
    return FormPart(name, filename)


class FormReader:
    """multipart/form-data read from a Request as it arrives: never more than one read plus a
    delimiter in memory. ``next_part()`` moves to the next part's headers; ``data()`` yields its bytes."""

    def __init__(self, request: Request, boundary: bytes) -> None:
        self._request = request
        self._delimiter = b"\r\n--" + boundary
        # A CRLF in front makes the first boundary look like every later one (preamble is skipped).
        self._buffer = bytearray(b"\r\n")

    def _fill(self) -> bool:
        chunk = self._request.read(READ_SIZE)
        self._buffer += chunk
        return bool(chunk)

    def _incomplete(self) -> S3Error:
        if self._request.truncated or not self._request.body_done:
            return S3Error(400, "IncompleteBody", "You did not provide the number of bytes specified by Content-Length")
        return _malformed()

    def next_part(self) -> FormPart | None:
        """The next part's name and filename; None at the closing boundary."""
        keep = len(self._delimiter) - 1
        while (at := self._buffer.find(self._delimiter)) < 0:
            del self._buffer[:-keep]  # whatever precedes a possible partial delimiter is not ours to read
            if not self._fill():
                raise self._incomplete()
        del self._buffer[: at + len(self._delimiter)]
        while len(self._buffer) < 2 and self._fill():
            pass
        if self._buffer[:2] == b"--":
            return None
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_PART_HEADERS:
                raise _malformed()
            if not self._fill():
                raise self._incomplete()
        block = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        padding, _, headers = block.partition(b"\r\n")
        if padding.strip(b" \t"):
            raise _malformed()
        return _parse_part_headers(headers)

    def data(self) -> Iterator[bytes]:
        """The current part's bytes, in pieces, up to the delimiter that ends it."""
        keep = len(self._delimiter) - 1
        while (at := self._buffer.find(self._delimiter)) < 0:
            if len(self._buffer) > keep:
                yield bytes(self._buffer[:-keep])
                del self._buffer[:-keep]
            if not self._fill():
                raise self._incomplete()
        if at:
            yield bytes(self._buffer[:at])
        del self._buffer[:at]  # the delimiter stays: next_part() starts from it


def _boundary(content_type: str | None) -> bytes:
    if not content_type or content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise _malformed("Bucket POST must be of the enclosure-type multipart/form-data")
    for match in _DISPOSITION_PARAM.finditer(content_type):
        if match.group(1).lower() == "boundary":
            boundary = _unquote_param(match.group(2))
            if 0 < len(boundary) <= 70:
                return boundary.encode("latin-1", "replace")
    raise _malformed()


def _read_fields(reader: FormReader) -> tuple[dict[str, str], FormPart]:
    """Fields up to the ``file`` part (names lower-cased), and that part; S3 ignores what follows it."""
    fields: dict[str, str] = {}
    total = 0
    while (part := reader.next_part()) is not None:
        name = part.name.lower()
        if name == "file":
            return fields, part
        value = bytearray()
        for piece in reader.data():
            value += piece
            total += len(piece)
            if total > POST_FIELDS_LIMIT:
                raise S3Error(
                    400,
                    "MaxPostPreDataLengthExceeded",
                    "Your POST request fields preceding the upload file were too large.",
                )
        if name in fields:
            raise S3Error(400, "InvalidArgument", f"Field {part.name} appears more than once")
        try:
            fields[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed() from None
    raise S3Error(400, "InvalidArgument", "POST requires exactly one file upload per request.")


def _policy_denied(detail: str) -> S3Error:
    return S3Error(403, "AccessDenied", f"Invalid according to Policy: {detail}")


def _parse_expiration(text: object) -> dt.datetime:
    if isinstance(text, str):
        for pattern in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
            try:
                return dt.datetime.strptime(text, pattern).replace(tzinfo=dt.UTC)
            except ValueError:
                continue
    raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid 'expiration' value")


@dataclass
class PostPolicy:
    """A verified policy: the conditions to hold the form to, and the size range, if any."""

    conditions: list[object]
    length_range: tuple[int, int] | None


def verify_post_signature(signer: SigV4, fields: Mapping[str, str], now: dt.datetime | None = None) -> PostPolicy:
    """Check the form's SigV4 signature over its policy, and the policy's expiry; return the policy."""
    policy = fields.get("policy")
    if policy is None:
        raise S3Error(403, "AccessDenied", "Anonymous POST is not allowed on this bucket")
    needed = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
    missing = [name for name in needed if name not in fields]
    if missing:
        raise S3Error(400, "InvalidArgument", f"Bucket POST must contain a field named '{missing[0]}'")
    if fields["x-amz-algorithm"] != ALGORITHM:
        raise S3Error(400, "InvalidArgument", "x-amz-algorithm must be AWS4-HMAC-SHA256")
    credential = fields["x-amz-credential"].split("/")
    if len(credential) != 5 or credential[0] != signer.access_key:
        raise S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    if credential[1:] != [fields["x-amz-date"][:8], signer.region, signer.service, "aws4_request"]:
        raise S3Error(403, "SignatureDoesNotMatch", "The credential scope does not match x-amz-date")
    expected = signer.signature(policy, credential[1])
    if not hmac.compare_digest(expected, fields["x-amz-signature"]):
        raise S3Error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    try:
        document = json.loads(base64.b64decode(policy, validate=True))
    except (binascii.Error, ValueError):
        raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from None
    if not isinstance(document, dict) or not isinstance(document.get("conditions"), list):
        raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Policy missing conditions.")
    if (now or dt.datetime.now(dt.UTC)) > _parse_expiration(document.get("expiration")):
        raise _policy_denied("Policy expired.")
    length_range = None
    for condition in document["conditions"]:
        if isinstance(condition, list) and condition and str(condition[0]).lower() == "content-length-range":
            if len(condition) != 3 or not all(isinstance(n, int) for n in condition[1:]):
                raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid content-length-range.")
            length_range = (condition[1], condition[2])
    return PostPolicy(document["conditions"], length_range)


def check_post_conditions(policy: PostPolicy, fields: Mapping[str, str], bucket: str) -> None:
    """Every condition holds, and every field (but the exempt ones) is covered by one."""
    values = {**fields, "bucket": bucket}
    covered: set[str] = set()
    for condition in policy.conditions:
        if isinstance(condition, dict) and len(condition) == 1:
            ((name, expected),) = condition.items()
            name, op, operand = str(name).lower(), "eq", expected
        elif isinstance(condition, list) and len(condition) == 3 and isinstance(condition[0], str):
            op = condition[0].lower()
            if op == "content-length-range":
                continue
            if op not in ("eq", "starts-with") or not str(condition[1]).startswith("$"):
                raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid Condition.")
            name, operand = str(condition[1])[1:].lower(), condition[2]
        else:
            raise S3Error(400, "InvalidPolicyDocument", "Invalid Policy: Invalid Condition.")
        covered.add(name)
        actual = values.get(name)
        holds = actual is not None and isinstance(operand, str) and (
            actual == operand if op == "eq" else actual.startswith(operand)
        )
        if not holds:
            # The condition is named, as S3 does, but never a credential (x-amz-*) in it.
            shown = "…" if name.startswith("x-amz-") else operand
            raise _policy_denied(f'Policy Condition failed: ["{op}", "${name}", "{shown}"]')
    exempt = covered | _UNCOVERED_OK
    extra = sorted(name for name in fields if name not in exempt and not name.startswith("x-ignore-"))
    if extra:
        raise _policy_denied(f"Extra input fields: {', '.join(extra)}")


class S3PostEndpoint:
    """``POST /s3/<bucket>``: presigned POST uploads into the same blob store as PUT.

    Mounted by the vendor simulators that hand out POST forms (registering it twice is harmless: the
    first route wins). Listeners of the S3 service hear about POSTed objects as they do about PUTs.
    """

    def __init__(self, s3: S3Service) -> None:
        self.s3 = s3

    def register(self, router: Router) -> None:
        router.add("POST", _POST_PATH.pattern, self._post)

    def _post(self, request: Request) -> Response:
        try:
            return self._post_checked(request)
        except S3Error as error:
            return s3_error_response(error)

    def _post_checked(self, request: Request) -> Response:
        if request.content_length is None:
            raise S3Error(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
        reader = FormReader(request, _boundary(request.header("Content-Type")))
        fields, part = _read_fields(reader)
        bucket = request.params["bucket"]
        policy = verify_post_signature(self.s3.signer, fields)
        check_post_conditions(policy, fields, bucket)
        if "key" not in fields:
            raise S3Error(400, "InvalidArgument", "Bucket POST must contain a field named 'key'.")
        key = fields["key"].replace("${filename}", part.filename or "")
        if not key:
            raise S3Error(400, "InvalidArgument", "User key must have a length greater than 0.")
        info = self._store(reader, bucket, key, fields, policy)
        for listener in list(self.s3._listeners):  # same module: the service's own listener list
            listener(info)
        return _post_success(request, fields, info)

    def _store(
        self, reader: FormReader, bucket: str, key: str, fields: Mapping[str, str], policy: PostPolicy
    ) -> BlobInfo:
        """Stream the file part to a temp file; commit it only if complete and within the size range."""
        low, high = policy.length_range or (0, self.s3.settings.max_object_size)
        high = min(high, self.s3.settings.max_object_size)
        fd, temp = self.s3.store.new_temp(bucket)
        committed = False
        try:
            digest = hashlib.md5(usedforsecurity=False)
            size = 0
            with os.fdopen(fd, "wb") as out:
                for piece in reader.data():
                    size += len(piece)
                    if size <= high:  # past the limit the rest is read (to answer cleanly) but not kept
                        digest.update(piece)
                        out.write(piece)
            if size > high:
                raise S3Error(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
            if size < low:
                raise S3Error(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
            metadata = {name: value for name, value in fields.items() if name.startswith("x-amz-meta-")}
            if "content-type" in fields:
                metadata["content-type"] = fields["content-type"]
            info = self.s3.store.commit(temp, bucket, key, size, digest.hexdigest(), metadata)
            committed = True
        finally:
            if not committed:
                temp.unlink(missing_ok=True)
        return info


def _post_success(request: Request, fields: Mapping[str, str], info: BlobInfo) -> Response:
    host = request.header("Host") or "127.0.0.1"
    location = f"http://{host}{S3Service.prefix}/{uri_encode(info.bucket)}/{uri_encode(info.key, keep_slash=True)}"
    headers = {"ETag": info.etag, "Location": location}
    status = fields.get("success_action_status", "")
    if status == "201":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<PostResponse><Location>{escape(location)}</Location><Bucket>{escape(info.bucket)}</Bucket>"
            f"<Key>{escape(info.key)}</Key><ETag>{escape(info.etag)}</ETag></PostResponse>"
        ).encode()
        return Response(201, body, {**headers, "Content-Type": "application/xml"})
    return Response(200 if status == "200" else 204, b"", headers)
