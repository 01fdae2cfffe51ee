"""A small S3 look-alike: SigV4 query presigning and verification, and a blob store on disk.

Theory of operation
-------------------
Vendors hand the daemon presigned URLs; the daemon PUTs (later: POSTs a form) to them. This module plays
the S3 side closely enough that the daemon's upload step meets the same refusals it would meet in the
wild (see VENDOR-APIS.md §5): expiry, signature mismatch, Content-MD5 checks, missing or short bodies.

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
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
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
