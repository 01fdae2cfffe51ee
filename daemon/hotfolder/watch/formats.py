"""Is a settled file finished? Two tests beyond "quiet for ``settle`` seconds": nobody is writing
it, and its end looks like the end of its format.

A quiet period alone is not enough. A scanner keeps its file open and pauses between pages; SMB
clients (Explorer, robocopy, ``CopyFile``) set the full size first and then fill the file in, so
the size never moves and a pause in the fill looks settled; a slow FTP ``STOR`` pauses like the
scanner. Each of these would attach a truncated or zero-tailed copy.

The first of them, nobody is writing it, is :mod:`hotfolder.watch.writers`; the second is here.

It looks complete
-----------------
For the formats scanners and cameras produce, the last few KiB (and for TIFF a few small reads at
the offsets its header gives) show whether the writer got to the end: PDF ends with ``%%EOF``,
JPEG with the EOI marker, PNG with its ``IEND`` chunk, a ZIP (docx, xlsx, odt…) with its
end-of-central-directory record, a SQLite file (MBTiles) is as long as its header's page count
says, and a TIFF's IFD chain lies inside the file. A pre-sized file being filled has zeros where
its end should be, which none of these formats allows. The type comes from the file's first bytes,
not its name, so unknown types (and anything not sniffed as one of these) pass; a file whose first
bytes are still zeros while its name says a checked format is incomplete too.
"""


from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TAIL_BYTES = 8 * 1024
# The ZIP end record sits within its 22 bytes plus a comment of at most 65,535 bytes of the end.
_ZIP_SEARCH = 22 + 0xFFFF
_TIFF_MAX_PAGES = 10_000  # an IFD chain longer than this is a loop, not a document

_CHECKED_SUFFIXES: dict[str, str] = {
    ".pdf": "PDF", ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF",
    ".zip": "ZIP", ".docx": "ZIP", ".xlsx": "ZIP", ".pptx": "ZIP", ".odt": "ZIP", ".ods": "ZIP",
    ".odp": "ZIP", ".mbtiles": "SQLite",
}


@dataclass(frozen=True)
class Incomplete:
    """The file's end is not the end of its format yet."""

    reason: str


def check_complete(path: Path, size: int) -> Incomplete | None:
    """None if ``path`` (``size`` bytes) passes its format's end test or has no test; else why not.

    Reads the first 16 bytes and at most the last 64 KiB (ZIP) or 8 KiB (the rest).
    """
    with open(path, "rb", buffering=0) as f:
        head = f.read(16)
        kind = _sniff(head)
        if kind is None:
            named = _CHECKED_SUFFIXES.get(path.suffix.lower())
            if named is not None and head and not any(head):
                return Incomplete(f"{named} starts with zero bytes: still being filled?")
            return None
        return _CHECKERS[kind](f, head, size)


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"%PDF-"):
        return "PDF"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if head.startswith(b"SQLite format 3\x00"):
        return "SQLite"
    return None


def _tail(f: BinaryIO, size: int, length: int) -> bytes:
    start = max(0, size - length)
    f.seek(start)
    return f.read(size - start)


def _zero_tail(tail: bytes, kind: str) -> Incomplete | None:
    # The fill of a pre-sized file has not reached the end: whatever else, that end is zeros.
    last = tail[-512:]
    if last and not any(last):
        return Incomplete(f"{kind} ends in zero bytes: still being filled?")
    return None


def _check_pdf(f: BinaryIO, head: bytes, size: int) -> Incomplete | None:
    tail = _tail(f, size, 1024)  # the spec puts %%EOF within the last 1024 bytes
    marker = tail.rfind(b"%%EOF")
    if marker < 0:
        return _zero_tail(tail, "PDF") or Incomplete("PDF has no %%EOF: truncated?")
    if tail[marker + 5:].strip(b" \t\r\n\f"):
        # Bytes after the last %%EOF: an incremental update still being appended.
        return _zero_tail(tail, "PDF") or Incomplete("PDF has data after its last %%EOF: still being appended?")
    return None


def _check_jpeg(f: BinaryIO, head: bytes, size: int) -> Incomplete | None:
    tail = _tail(f, size, 512)
    if tail.endswith(b"\xff\xd9"):
        return None
    return _zero_tail(tail, "JPEG") or Incomplete("JPEG does not end with its EOI marker (FF D9): truncated?")


_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _check_png(f: BinaryIO, head: bytes, size: int) -> Incomplete | None:
    tail = _tail(f, size, 512)
    if tail.endswith(_PNG_IEND):
        return None
    return _zero_tail(tail, "PNG") or Incomplete("PNG does not end with its IEND chunk: truncated?")


def _check_zip(f: BinaryIO, head: bytes, size: int) -> Incomplete | None:
    tail = _tail(f, size, _ZIP_SEARCH)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0:
        if at + 22 <= len(tail):
            (comment_length,) = struct.unpack_from("<H", tail, at + 20)
            if at + 22 + comment_length == len(tail):
                return None
        at = tail.rfind(b"PK\x05\x06", 0, at)
    return _zero_tail(tail, "ZIP") or Incomplete("ZIP (Office) file has no end-of-central-directory record: truncated?")


def _check_sqlite(f: BinaryIO, head: bytes, size: int) -> Incomplete | None:
    f.seek(0)
    header = f.read(100)
    if len(header) < 100:
        return Incomplete("SQLite (MBTiles) header is cut short: truncated?")
    (page_size,) = struct.unpack_from(">H", header, 16)
    page_size = 65536 if page_size == 1 else page_size
    change_counter, page_count = struct.unpack_from(">II", header, 24)
    (valid_for,) = struct.unpack_from(">I", header, 92)
    if page_size < 512 or page_size & (page_size - 1):
        return Incomplete("SQLite (MBTiles) header has no valid page size: still being written?")
    # The in-header page count is trustworthy only when written by the same change as the counter.
    if valid_for == change_counter and page_count:
        expected = page_count * page_size
        if size < expected:
            return Incomplete(f"SQLite (MBTiles) holds {size} of {expected} bytes its header declares: truncated?")
    elif size % page_size:
        return Incomplete("SQLite (MBTiles) size is not a whole number of pages: truncated?")
    return _zero_tail(_tail(f, size, page_size), "SQLite (MBTiles)")


def _check_tiff(f: BinaryIO, head: bytes, size: int) -> Incomplete | None:
    order = "<" if head.startswith(b"II") else ">"
    (offset,) = struct.unpack_from(order + "I", head, 4)
    seen: set[int] = set()
    while offset:
        if offset in seen or len(seen) >= _TIFF_MAX_PAGES:
            return Incomplete("TIFF's IFD chain loops: damaged or still being written?")
        seen.add(offset)
        if offset + 2 > size:
            return Incomplete(f"TIFF's IFD at byte {offset} lies beyond its {size} bytes: truncated?")
        f.seek(offset)
        (entries,) = struct.unpack(order + "H", f.read(2))
        end = offset + 2 + 12 * entries + 4
        if entries == 0:
            return Incomplete(f"TIFF's IFD at byte {offset} is empty (zero bytes): still being filled?")
        if end > size:
            return Incomplete(f"TIFF's IFD at byte {offset} runs past its {size} bytes: truncated?")
        f.seek(end - 4)
        (offset,) = struct.unpack(order + "I", f.read(4))
    return None


_CHECKERS = {
    "PDF": _check_pdf, "JPEG": _check_jpeg, "PNG": _check_png, "ZIP": _check_zip, "SQLite": _check_sqlite,
    "TIFF": _check_tiff,
}
