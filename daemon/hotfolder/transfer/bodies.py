"""Request bodies that frame a file: built while they are sent, their exact length known before.

Every body here is a generator of pieces with a length computed up front, for the caller to send as
Content-Length: httpx sends ``Transfer-Encoding: chunked`` for an iterator body unless the caller sets
Content-Length, and S3 answers 411 to a chunked upload (the chunk-less PHP behind EspoCRM wants a length too).

* :func:`base64_json_body`, :func:`base64_chunk_body`: the file as a base64 data URI, inside a JSON
  document or alone (EspoCRM).
* :class:`MultipartForm`: ``multipart/form-data`` with text fields and one file part (S3's presigned
  POST for SaferMe, Fulcrum's photo upload).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from hotfolder.transfer.files import (
    CHUNK_SIZE,
    FileIdentity,
    check_unchanged,
    iter_file,
    iter_file_checked,
    open_checked,
)

# --- base64 data URIs (EspoCRM: the file inline in a JSON body) -----------------------------------------
#
# EspoCRM takes a file as a base64 data URI inside a JSON document, ~4/3 of the file's size. The body is
# the JSON before the file's value, the file encoded piece by piece, the JSON after it. Base64 turns every
# 3 bytes into 4 characters, so pieces encoded from multiples of 3 bytes concatenate into one valid
# encoding (only the last piece is padded), and the total length, 4 * ceil(size / 3), is known before a
# byte is read.


def base64_length(size: int) -> int:
    """Characters of the padded base64 encoding of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def data_uri_prefix(mime: str) -> bytes:
    """``data:<mime>;base64,``: what precedes the encoded bytes in EspoCRM's ``file`` value."""
    return f"data:{mime};base64,".encode("ascii")


def _base64_read_size(chunk_size: int) -> int:
    """``chunk_size`` rounded down to a multiple of 3 (at least 3), so reads encode without padding."""
    return max(3, chunk_size - chunk_size % 3)


def _base64_pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Base64 of the concatenated ``chunks``, in pieces that concatenate to one encoding.

    A chunk whose length is not a multiple of 3 (a short read, possible on network mounts) leaves a
    remainder that is carried into the next piece, so no piece but the last is ever padded.
    """
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
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
        yield from _base64_pieces(iter_file_checked(f, path, expected, _base64_read_size(chunk_size)))
    yield suffix


def base64_chunk_body(
    f: BinaryIO, size: int, mime: str, *, chunk_size: int = CHUNK_SIZE
) -> tuple[Iterator[bytes], int]:
    """One chunk of a chunked upload, ``data:<mime>;base64,<next size bytes of f>``, and its length.

    Reads from ``f``'s current position, so consecutive calls walk the file chunk by chunk; the
    chunk itself is streamed too, so a large ``chunk_size`` does not cost memory either.
    """
    prefix = data_uri_prefix(mime)
    pieces = _base64_pieces(iter_file(f, size, _base64_read_size(chunk_size)))
    return _prefixed(prefix, pieces), len(prefix) + base64_length(size)


def _prefixed(prefix: bytes, pieces: Iterator[bytes]) -> Iterator[bytes]:
    yield prefix
    yield from pieces


# --- multipart/form-data ----------------------------------------------------------------------------------
#
# Framed here, not by httpx's ``data=``/``files=``: httpx takes a file's length from ``fstat`` when the
# request is built (the file as it is now, not as hashed), reads it to its end, and falls back to chunked
# encoding when it cannot measure it, which S3 refuses (411). Framed here, exactly the hashed bytes go out
# behind a Content-Length known before the first byte.


def form_data_name(value: str) -> str:
    """A field name or file name as it stands between the quotes of a part's Content-Disposition.

    Escaped as browsers escape it (WHATWG HTML, "multipart/form-data encoding algorithm"): ``"`` becomes
    %22, CR %0D, LF %0A, nothing else changes, and the result is sent as UTF-8. That rule because form
    parsers are written for what browsers send: Ceph RGW keeps the text between the quotes as it stands,
    the sandbox's S3 parser decodes these three escapes. A backslash escape (RFC 822's quoted-pair) is not
    undone by RGW, so ``a\\b`` would be stored with two backslashes; ``filename*=`` (RFC 5987) is
    forbidden in form-data by RFC 7578.
    """
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


@dataclass(frozen=True)
class FilePart:
    """The form's one file part: its field name, the file name and type it is sent as, and its size."""

    name: str
    filename: str
    content_type: str
    size: int


FormPart = tuple[str, str] | FilePart  # a text field (name, value), or the file


class MultipartForm:
    """A ``multipart/form-data`` body of text fields and one file part, in the order the caller gives.

    The order matters to servers: S3 ignores fields after the file part, Fulcrum reads the photo's access
    key before it. Only the framing is held in memory; the file's bytes are streamed by :meth:`body`.
    """

    def __init__(self, parts: Sequence[FormPart]) -> None:
        files = [(index, part) for index, part in enumerate(parts) if isinstance(part, FilePart)]
        if len(files) != 1:
            raise ValueError(f"a form takes exactly one file part, not {len(files)}")
        at, file = files[0]
        self.size = file.size
        self.boundary = os.urandom(16).hex()  # 128 random bits: never found inside the file by chance
        self.head = b"".join(self._encode(part) for part in parts[: at + 1])
        after = b"".join(self._encode(part) for part in parts[at + 1 :])
        self.tail = b"\r\n" + after + f"--{self.boundary}--\r\n".encode("ascii")

    def _encode(self, part: FormPart) -> bytes:
        """A text field whole, or the file part's headers (its bytes follow them)."""
        if isinstance(part, FilePart):
            disposition = f'name="{form_data_name(part.name)}"; filename="{form_data_name(part.filename)}"'
            return self._part_head(disposition, f"Content-Type: {part.content_type}\r\n")
        name, value = part
        return self._part_head(f'name="{form_data_name(name)}"') + value.encode("utf-8") + b"\r\n"

    def _part_head(self, disposition: str, more_headers: str = "") -> bytes:
        return f"--{self.boundary}\r\nContent-Disposition: form-data; {disposition}\r\n{more_headers}\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        """The body's exact length in bytes, for Content-Length."""
        return len(self.head) + self.size + len(self.tail)

    def body(self, file_bytes: Iterable[bytes]) -> Iterator[bytes]:
        """The framing with ``file_bytes`` in the file part's place; they must come to exactly ``size`` bytes
        (:func:`~hotfolder.transfer.files.iter_file` sees to it), since :attr:`length` promised them."""
        yield self.head
        yield from file_bytes
        yield self.tail
