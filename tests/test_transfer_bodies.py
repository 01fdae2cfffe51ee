"""The one multipart/form-data writer, read back by a parser that is not ours (Python's ``email``).

What a server must get: every name and file name as sent (escaped as browsers escape them), the file's
bytes exactly, parts in the caller's order, and a body exactly as long as the Content-Length promised.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
from pathlib import Path

import pytest

from hotfolder.transfer import FileIdentity, FilePart, MultipartForm, form_data_name, iter_file, open_checked

ODD_NAME = 'say "cheese"\r\nà la café\n名前'  # a quote, CR, LF, and non-ASCII (Latin and CJK)
ODD_FILENAME = 'photo "1"\r\n été\n写真.jpg'


def parse(form: MultipartForm, body: bytes) -> list[tuple[str, str | None, str, bytes]]:
    """(name, filename, content type, bytes) of each part, names decoded as a form parser decodes them."""
    head = f"Content-Type: {form.content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    assert message.is_multipart() and not message.defects
    parts = []
    for part in message.iter_parts():
        assert part.get_content_disposition() == "form-data" and not part.defects
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        assert isinstance(name, str)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append((unescape(name), None if filename is None else unescape(str(filename)),
                      part.get_content_type(), payload))
    return parts


def unescape(value: str) -> str:
    return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def test_odd_names_and_the_file_come_back_as_sent_and_the_length_is_exact(tmp_path: Path) -> None:
    # Bytes that look like framing, larger than one read, so the file goes out in several pieces.
    data = (b"\r\n--" + os.urandom(61) + b"\r\n\r\n") * 20_000
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    expected = FileIdentity.of(os.stat(path))
    form = MultipartForm([
        ("policy", "eyJ…"),
        (ODD_NAME, "välue\r\nline two"),
        FilePart(ODD_NAME + "[file]", ODD_FILENAME, "image/jpeg", expected.size),
        ("after", "the file"),  # S3 ignores fields after the file part; the writer puts them there if asked
    ])

    with open_checked(path, expected) as f:
        pieces = list(form.body(iter_file(f, expected.size)))
    body = b"".join(pieces)

    assert len(pieces) > 3  # streamed: the framing, the file's reads, the rest
    assert len(body) == form.length
    assert parse(form, body) == [
        ("policy", None, "text/plain", "eyJ…".encode()),
        (ODD_NAME, None, "text/plain", "välue\r\nline two".encode()),
        (ODD_NAME + "[file]", ODD_FILENAME, "image/jpeg", data),
        ("after", None, "text/plain", b"the file"),
    ]


def test_the_file_part_goes_where_the_caller_puts_it() -> None:
    for parts in (
        [FilePart("file", "a.txt", "text/plain", 3), ("key", "k")],
        [("key", "k"), FilePart("file", "a.txt", "text/plain", 3)],
    ):
        form = MultipartForm(parts)
        body = b"".join(form.body([b"abc"]))
        assert len(body) == form.length
        assert [(name, data) for name, _, _, data in parse(form, body)] == [
            ("file", b"abc") if isinstance(part, FilePart) else (part[0], part[1].encode()) for part in parts
        ]


def test_names_are_escaped_as_browsers_do() -> None:
    # Only the three characters that would end the header or the quoted value; a backslash and a percent
    # sign go as they are, as a browser sends them (and as Ceph RGW keeps them: test_transfer_form_rgw.py).
    assert form_data_name('a"b\rc\nd') == "a%22b%0Dc%0Ad"
    assert form_data_name("C:\\dir\\50% é.jpg") == "C:\\dir\\50% é.jpg"
    form = MultipartForm([FilePart('x"\r\n', 'y"\r\n.jpg', "image/jpeg", 0)])
    assert b'name="x%22%0D%0A"; filename="y%22%0D%0A.jpg"\r\n' in form.head
    assert "é".encode() in MultipartForm([FilePart("f", "é.jpg", "image/jpeg", 0)]).head  # UTF-8, not =?…?=


@pytest.mark.parametrize("files", [0, 2])
def test_a_form_takes_exactly_one_file_part(files: int) -> None:
    with pytest.raises(ValueError, match="exactly one file part"):
        MultipartForm([("key", "k"), *[FilePart(f"f{n}", "a", "text/plain", 1) for n in range(files)]])


def test_each_form_has_its_own_boundary() -> None:
    forms = [MultipartForm([FilePart("file", "a", "text/plain", 0)]) for _ in range(2)]
    assert forms[0].boundary != forms[1].boundary and len(forms[0].boundary) == 32
