"""put_presigned against a real S3 (Ceph RGW), with URLs presigned by botocore as a vendor would.

S3 decides here, not us: whether the URL expired, whether the signed headers match, whether
the body matches Content-MD5. We check that each refusal becomes the right StepError kind,
that the reason names S3's code, and that no message leaks the signature.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import FileIdentity, hash_file, put_presigned
from tests.rgw import RGWServer


@pytest.fixture
def key() -> str:
    return f"inbox/{uuid.uuid4().hex}/photo.jpg"


def upload_error(client: httpx.Client, url: str, headers: dict[str, str], path: Path) -> StepError:
    with pytest.raises(StepError) as err:
        put_presigned(client, url, headers, path, FileIdentity.of(os.stat(path)))
    assert "X-Amz-Signature" not in str(err.value)
    assert "X-Amz-Signature" not in err.value.outcome.reason
    return err.value


def test_put_success_bytes_and_etag(rgw: RGWServer, client: httpx.Client, key: str, photo: Path) -> None:
    digests = hash_file(photo)
    url, headers = rgw.presign_put(
        key, content_md5=digests.md5_base64, content_type="image/jpeg", metadata={"record": "R-42"}
    )

    etag = put_presigned(client, url, headers, photo, digests.identity)

    assert etag == digests.md5
    assert rgw.get_object_bytes(key) == photo.read_bytes()
    head = rgw.head_object(key)
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"] == {"record": "R-42"}


def test_put_empty_file(rgw: RGWServer, client: httpx.Client, key: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    url, headers = rgw.presign_put(key)
    etag = put_presigned(client, url, headers, empty, FileIdentity.of(os.stat(empty)))
    assert etag == hashlib.md5(b"").hexdigest()
    assert rgw.get_object_bytes(key) == b""


def test_expired_url_is_expired(rgw: RGWServer, client: httpx.Client, key: str, photo: Path) -> None:
    url, headers = rgw.presign_put(key, expires=1)
    time.sleep(2.1)
    error = upload_error(client, url, headers, photo)
    assert error.kind is OutcomeKind.EXPIRED
    assert error.outcome.status == 403
    assert "AccessDenied" in error.outcome.reason


def test_tampered_signature_is_expired(rgw: RGWServer, client: httpx.Client, key: str, photo: Path) -> None:
    url, headers = rgw.presign_put(key)
    marker = "X-Amz-Signature="
    at = url.index(marker) + len(marker)
    flipped = "0" if url[at] != "0" else "1"
    tampered = url[:at] + flipped + url[at + 1 :]

    error = upload_error(client, tampered, headers, photo)
    assert error.kind is OutcomeKind.EXPIRED
    assert "SignatureDoesNotMatch" in error.outcome.reason


def test_wrong_content_md5_of_an_unchanged_file_spends_an_attempt(
    rgw: RGWServer, client: httpx.Client, key: str, photo: Path
) -> None:
    """BadDigest while the file is as hashed: the bytes were damaged on the way, not rewritten, so the
    retry counts (waiting for a writer would never count, and a path that damages bytes would loop)."""
    other_md5 = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()
    url, headers = rgw.presign_put(key, content_md5=other_md5)

    error = upload_error(client, url, headers, photo)
    assert error.kind is OutcomeKind.TRANSIENT
    assert error.outcome.status == 400
    assert "BadDigest" in error.outcome.reason and "did not change" in error.outcome.reason


def test_content_type_other_than_signed_is_expired(rgw: RGWServer, client: httpx.Client, key: str, photo: Path) -> None:
    url, headers = rgw.presign_put(key, content_type="image/jpeg")
    headers["Content-Type"] = "image/png"

    error = upload_error(client, url, headers, photo)
    assert error.kind is OutcomeKind.EXPIRED
    assert "SignatureDoesNotMatch" in error.outcome.reason


def test_signed_header_left_out_is_expired(rgw: RGWServer, client: httpx.Client, key: str, photo: Path) -> None:
    url, _ = rgw.presign_put(key, content_md5=hash_file(photo, ("md5",)).md5_base64)

    error = upload_error(client, url, {}, photo)
    assert error.kind is OutcomeKind.EXPIRED
    assert "SignatureDoesNotMatch" in error.outcome.reason
