"""hotfolder.transfer without S3: digests, file checks, URL redaction, and what goes on the wire.

The wire tests use a tiny stdlib HTTP server on 127.0.0.1 that records the request line,
headers and body digest, and answers as told. The S3 judgement itself is tested against a
real Ceph RGW in test_transfer_rgw.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import (
    CHUNK_SIZE,
    FileDigests,
    FileIdentity,
    check_unchanged,
    classify_s3_error,
    hash_file,
    iter_file,
    open_checked,
    put_presigned,
    redact_url,
)

SIGNED_QUERY = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=" + "ab" * 32


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def identity(path: Path) -> FileIdentity:
    return FileIdentity.of(os.stat(path))


# --- digests --------------------------------------------------------------------------------

SIZES = {"empty": 0, "small": 1000, "multi_chunk": 2 * CHUNK_SIZE + 12345}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("algorithms", [("md5",), ("sha256",), ("md5", "sha256")])
def test_hash_file_matches_hashlib(tmp_path: Path, size: int, algorithms: tuple[str, ...]) -> None:
    data = os.urandom(size)
    path = write(tmp_path / "photo.jpg", data)

    digests = hash_file(path, algorithms)

    assert digests.identity == identity(path)
    assert digests.md5 == (hashlib.md5(data).hexdigest() if "md5" in algorithms else None)
    assert digests.sha256 == (hashlib.sha256(data).hexdigest() if "sha256" in algorithms else None)


def test_digests_round_trip_and_base64_md5(tmp_path: Path) -> None:
    import base64
    import json

    data = b"hello hotfolder"
    digests = hash_file(write(tmp_path / "a.bin", data))

    assert digests.md5_base64 == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert FileDigests.from_dict(json.loads(json.dumps(digests.as_dict()))) == digests


def test_md5_base64_without_md5_is_an_error(tmp_path: Path) -> None:
    digests = hash_file(write(tmp_path / "a.bin", b"x"), ("sha256",))
    with pytest.raises(ValueError):
        _ = digests.md5_base64


def test_unknown_algorithm_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha1"):
        hash_file(write(tmp_path / "a.bin", b"x"), ("sha1",))


def test_hash_missing_file_is_file_gone(tmp_path: Path) -> None:
    with pytest.raises(StepError) as err:
        hash_file(tmp_path / "nope.jpg")
    assert err.value.kind is OutcomeKind.FILE_GONE


def test_hash_file_growing_while_read_is_file_changed(tmp_path: Path) -> None:
    path = write(tmp_path / "growing.bin", os.urandom(64 * CHUNK_SIZE))
    started, stop = threading.Event(), threading.Event()

    def append_until_stopped() -> None:
        with open(path, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x" * 4096)
                started.set()

    writer = threading.Thread(target=append_until_stopped)
    writer.start()
    try:
        started.wait(5)
        with pytest.raises(StepError) as err:
            hash_file(path)
    finally:
        stop.set()
        writer.join()
    assert err.value.kind is OutcomeKind.FILE_CHANGED


def test_symlink_is_refused_never_read(tmp_path: Path) -> None:
    target = write(tmp_path / "secret.txt", b"not yours")
    link = tmp_path / "photo.jpg"
    link.symlink_to(target)

    with pytest.raises(StepError) as err:
        hash_file(link)
    assert err.value.kind is OutcomeKind.PERMANENT
    assert "symbolic link" in err.value.outcome.reason
    with pytest.raises(StepError) as err:
        open_checked(link, identity(target))
    assert err.value.kind is OutcomeKind.PERMANENT


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_non_regular_files_are_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "odd"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading must not block waiting for a writer
    else:
        path.mkdir()
    with pytest.raises(StepError) as err:
        hash_file(path)
    assert err.value.kind is OutcomeKind.PERMANENT
    assert "not a regular file" in err.value.outcome.reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_permanent(tmp_path: Path) -> None:
    path = write(tmp_path / "locked.jpg", b"x")
    path.chmod(0)
    with pytest.raises(StepError) as err:
        hash_file(path)
    assert err.value.kind is OutcomeKind.PERMANENT
    assert "permission denied" in err.value.outcome.reason


# --- identity checks --------------------------------------------------------------------------


def test_check_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path / "a.bin", b"12345")
    before = identity(path)
    check_unchanged(path, before)

    with open(path, "ab") as f:
        f.write(b"6")
    with pytest.raises(StepError) as err:
        check_unchanged(path, before)
    assert err.value.kind is OutcomeKind.FILE_CHANGED

    path.unlink()
    with pytest.raises(StepError) as err:
        check_unchanged(path, before)
    assert err.value.kind is OutcomeKind.FILE_GONE


def test_a_rewrite_that_puts_size_and_mtime_back_is_still_a_change(tmp_path: Path) -> None:
    """Same size, mtime restored (``touch -r``, a copy that keeps times): the ctime tells. A file of
    that size and those times renamed over the path: the inode tells."""
    path = write(tmp_path / "a.bin", b"12345")
    before = os.stat(path)
    expected = identity(path)
    time.sleep(0.01)
    write(path, b"54321")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(StepError) as err:
        check_unchanged(path, expected)
    assert err.value.kind is OutcomeKind.FILE_CHANGED and "ctime_ns" in err.value.outcome.reason

    expected = identity(path)
    other = write(tmp_path / "b.bin", b"abcde")
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, path)
    with pytest.raises(StepError) as err:
        check_unchanged(path, expected)
    assert "ino" in err.value.outcome.reason


def test_an_identity_journalled_without_ctime_and_inode_compares_what_it_has(tmp_path: Path) -> None:
    path = write(tmp_path / "a.bin", b"12345")
    st = os.stat(path)
    check_unchanged(path, FileIdentity(st.st_size, st.st_mtime_ns))
    assert FileDigests.from_dict({"size": 5, "mtime_ns": st.st_mtime_ns}).identity.ctime_ns is None


def test_open_checked_refuses_a_different_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.bin", b"12345")
    before = identity(path)
    write(path, b"1234")
    with pytest.raises(StepError) as err:
        open_checked(path, before)
    assert err.value.kind is OutcomeKind.FILE_CHANGED


def test_iter_file_yields_exactly_size_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 * 1000 + 7)
    path = write(tmp_path / "a.bin", data)
    with open_checked(path, identity(path)) as f:
        chunks = list(iter_file(f, 2500, chunk_size=1000))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert b"".join(chunks) == data[:2500]


def test_iter_file_that_ends_early_is_file_changed(tmp_path: Path) -> None:
    path = write(tmp_path / "a.bin", b"x" * 10)
    with open_checked(path, identity(path)) as f, pytest.raises(StepError) as err:
        list(iter_file(f, 11, chunk_size=4))
    assert err.value.kind is OutcomeKind.FILE_CHANGED


# --- redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://s3.example.com/bucket/k/photo.jpg?{SIGNED_QUERY}",
            "https://s3.example.com/bucket/k/photo.jpg?[redacted]",
        ),
        ("http://127.0.0.1:9000/b/k", "http://127.0.0.1:9000/b/k"),
        ("https://user:pw@host/b/k?sig=1#frag", "https://host/b/k?[redacted]"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- S3 error classification -----------------------------------------------------------------


def s3_error(status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return httpx.Response(status, content=body.encode(), headers=headers)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (403, "AccessDenied", OutcomeKind.EXPIRED),
        (403, "SignatureDoesNotMatch", OutcomeKind.EXPIRED),
        (403, "", OutcomeKind.EXPIRED),
        (400, "BadDigest", OutcomeKind.FILE_CHANGED),
        (400, "IncompleteBody", OutcomeKind.TRANSIENT),
        (400, "InvalidDigest", OutcomeKind.PERMANENT),
        (400, "EntityTooLarge", OutcomeKind.PERMANENT),
        (411, "MissingContentLength", OutcomeKind.PERMANENT),
        (404, "NoSuchBucket", OutcomeKind.PERMANENT),
        (500, "InternalError", OutcomeKind.TRANSIENT),
        (503, "SlowDown", OutcomeKind.TRANSIENT),
    ],
)
def test_classify_s3_error(status: int, code: str, kind: OutcomeKind) -> None:
    error = classify_s3_error(s3_error(status, code), "upload")
    assert error.kind is kind
    assert error.outcome.status == status
    assert error.outcome.reason.startswith(f"upload refused by S3: {status} ")
    assert code in error.outcome.reason


def test_classify_names_code_and_message_and_keeps_retry_after() -> None:
    expired = classify_s3_error(s3_error(403, "AccessDenied", "Request has expired"), "upload")
    assert expired.outcome.reason == "upload refused by S3: 403 AccessDenied: Request has expired"

    slow = classify_s3_error(s3_error(503, "SlowDown", "Reduce your rate", {"Retry-After": "7"}), "upload")
    assert slow.outcome.retry_after == 7.0


def test_classify_a_non_xml_answer_without_echoing_a_query() -> None:
    page = f"<html>Bad gateway for /b/k?{SIGNED_QUERY}</html>".encode()
    error = classify_s3_error(httpx.Response(502, content=page), "upload")
    assert error.kind is OutcomeKind.TRANSIENT
    assert "502 Bad Gateway" in error.outcome.reason
    assert "X-Amz-Signature" not in error.outcome.reason


# --- on the wire --------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    md5: str
    length: int


@dataclass
class Sink:
    """What the server saw, and how it answers: (status, headers, body)."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    answer: tuple[int, dict[str, str], bytes] = (200, {"ETag": '"etag-from-sink"'}, b"")
    on_headers: Callable[[], None] | None = None  # runs after the headers arrive, before the body


@pytest.fixture
def sink() -> Iterator[Sink]:
    state = Sink(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            if state.on_headers:
                state.on_headers()
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                self.send_error(411)  # as S3 does; we should never get here
                return
            md5, remaining = hashlib.md5(), int(self.headers.get("Content-Length", "0"))
            length = remaining
            while remaining:
                data = self.rfile.read(min(remaining, CHUNK_SIZE))
                if not data:
                    return  # the client gave up mid-body
                md5.update(data)
                remaining -= len(data)
            state.requests.append(Recorded("PUT", self.path, dict(self.headers.items()), md5.hexdigest(), length))
            status, headers, body = state.answer
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/bucket/inbox/photo.jpg?{SIGNED_QUERY}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_put_sends_content_length_not_chunked(tmp_path: Path, sink: Sink) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 17)
    path = write(tmp_path / "photo.jpg", data)
    signed = {"Content-MD5": "whatever==", "Content-Type": "image/jpeg", "x-amz-meta-record": "R-1"}

    with httpx.Client() as client:
        etag = put_presigned(client, sink.url, signed, path, identity(path))

    assert etag == "etag-from-sink"
    [request] = sink.requests
    assert request.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in request.headers
    assert request.md5 == hashlib.md5(data).hexdigest()
    assert request.path == f"/bucket/inbox/photo.jpg?{SIGNED_QUERY}"
    for name, value in signed.items():
        assert request.headers[name] == value


def test_put_empty_file(tmp_path: Path, sink: Sink) -> None:
    path = write(tmp_path / "empty.txt", b"")
    with httpx.Client() as client:
        put_presigned(client, sink.url, {}, path, identity(path))
    [request] = sink.requests
    assert request.headers["Content-Length"] == "0"
    assert "Transfer-Encoding" not in request.headers


def test_put_refuses_a_changed_file_before_sending(tmp_path: Path, sink: Sink) -> None:
    path = write(tmp_path / "photo.jpg", b"12345")
    before = identity(path)
    write(path, b"123456")
    with httpx.Client() as client, pytest.raises(StepError) as err:
        put_presigned(client, sink.url, {}, path, before)
    assert err.value.kind is OutcomeKind.FILE_CHANGED
    assert sink.requests == []


def test_put_file_shrinking_mid_upload_is_file_changed(tmp_path: Path, sink: Sink) -> None:
    # Far larger than the loopback socket buffers: the client is still reading the file when
    # the server, having seen only the headers, truncates it.
    path = write(tmp_path / "photo.jpg", os.urandom(64 * CHUNK_SIZE))
    sink.on_headers = lambda: os.truncate(path, 0)
    with httpx.Client() as client, pytest.raises(StepError) as err:
        put_presigned(client, sink.url, {}, path, identity(path))
    assert err.value.kind is OutcomeKind.FILE_CHANGED
    assert "X-Amz-Signature" not in str(err.value)


def test_put_s3_refusal_is_classified(tmp_path: Path, sink: Sink) -> None:
    path = write(tmp_path / "photo.jpg", b"12345")
    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    sink.answer = (503, {"Retry-After": "3"}, body)
    with httpx.Client() as client, pytest.raises(StepError) as err:
        put_presigned(client, sink.url, {}, path, identity(path), what="Fulcrum upload")
    assert err.value.kind is OutcomeKind.TRANSIENT
    assert err.value.outcome.retry_after == 3.0
    assert err.value.outcome.reason == "Fulcrum upload refused by S3: 503 SlowDown: Please reduce your request rate."


def test_put_connection_refused_is_transient_and_redacted(tmp_path: Path, sink: Sink) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    path = write(tmp_path / "photo.jpg", b"12345")
    url = f"http://127.0.0.1:{port}/bucket/photo.jpg?{SIGNED_QUERY}"
    with httpx.Client() as client, pytest.raises(StepError) as err:
        put_presigned(client, url, {}, path, identity(path))
    assert err.value.kind is OutcomeKind.TRANSIENT
    assert f"127.0.0.1:{port}/bucket/photo.jpg?[redacted]" in err.value.outcome.reason
    assert "X-Amz-Signature" not in str(err.value)
