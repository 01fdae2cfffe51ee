"""Small files that pass the readiness tail checks (and their truncated forms), for tests."""

from __future__ import annotations

import io
import sqlite3
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path


def pdf(body: bytes = b"") -> bytes:
    return b"%PDF-1.4\n" + body + b"\ntrailer\n<< >>\n%%EOF\n"


def jpeg(body: bytes = b"") -> bytes:
    return b"\xff\xd8\xff\xe0" + body + b"\xff\xd9"


def png(body: bytes = b"") -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"tEXt", b"c\x00" + body) + chunk(b"IEND", b"")


def tiff(pages: int = 1) -> bytes:
    """A little-endian TIFF whose IFD chain (``pages`` IFDs of one entry) sits after the header."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        following = 8 + (page + 1) * 18 if page + 1 < pages else 0
        out += struct.pack("<H", 1) + struct.pack("<HHII", 256, 4, 1, 1) + struct.pack("<I", following)
    return bytes(out)


def docx(text: str = "hello") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", text)
    return buffer.getvalue()


def mbtiles(rows: int = 10) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.mbtiles"
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE tiles (z INTEGER, x INTEGER, y INTEGER, tile_data BLOB)")
        db.executemany("INSERT INTO tiles VALUES (0, ?, 0, ?)", [(i, bytes(200)) for i in range(rows)])
        db.commit()
        db.close()
        return path.read_bytes()
