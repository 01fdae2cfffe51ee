"""post_form against a real S3 (Ceph RGW), with forms presigned by botocore as a vendor backend would.

RGW judges here, not our simulator: the policy's signature, its expiry and its conditions. We check that
an accepted form stores exactly the file's bytes under the key S3 reports, that each refusal becomes
the StepError kind that lets the pipeline recover (presign again, or give up), and that no field value
(policy, signature, credential) ever reaches a reason.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind
from hotfolder.transfer import FileIdentity, post_form
from tests.rgw import RGWServer

SECRET_FIELDS = ("policy", "x-amz-signature", "x-amz-credential")


@pytest.fixture
def prefix() -> str:
    return f"async_uploads/{uuid.uuid4()}/"


def presign_form(
    rgw: RGWServer, prefix: str, *, expires: int = 3600, extra_conditions: list[Any] | None = None
) -> tuple[str, dict[str, str]]:
    """A form shaped like SaferMe's: key under a prefix, any Content-Type, 201 with a PostResponse."""
    answer = rgw.s3_client().generate_presigned_post(
        rgw.bucket,
        prefix + "${filename}",
        Fields={"success_action_status": "201", "Content-Type": "image/jpeg"},
        Conditions=[
            ["starts-with", "$key", prefix],
            ["starts-with", "$Content-Type", ""],
            {"success_action_status": "201"},
            *(extra_conditions or []),
        ],
        ExpiresIn=expires,
    )
    return answer["url"], dict(answer["fields"])


def send(client: httpx.Client, url: str, fields: dict[str, str], path: Path) -> str:
    return post_form(
        client, url, fields, path, FileIdentity.of(os.stat(path)), filename=path.name, content_type="image/jpeg"
    )


def refusal(client: httpx.Client, url: str, fields: dict[str, str], path: Path) -> StepError:
    with pytest.raises(StepError) as caught:
        send(client, url, fields, path)
    error = caught.value
    for name in SECRET_FIELDS:
        assert fields[name] not in str(error) and fields[name] not in error.outcome.reason, name
    return error


def test_form_post_stores_the_bytes_under_the_reported_key(
    rgw: RGWServer, client: httpx.Client, prefix: str, photo: Path
) -> None:
    url, fields = presign_form(rgw, prefix)
    fields["key"] = prefix + photo.name  # as the SaferMe adapter does: key_prefix + the file's name

    key = send(client, url, fields, photo)

    assert key == prefix + "photo.jpg"
    assert rgw.get_object_bytes(key) == photo.read_bytes()
    assert rgw.head_object(key)["ContentType"] == "image/jpeg"  # the Content-Type *field* decides


def test_filename_placeholder_and_xml_escaped_key(
    rgw: RGWServer, client: httpx.Client, prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "a & b <1>.jpg"
    path.write_bytes(b"small")
    url, fields = presign_form(rgw, prefix)  # key ends in ${filename}: S3 fills it in

    key = send(client, url, fields, path)

    assert key == prefix + "a & b <1>.jpg"  # the PostResponse's &amp; and &lt; came back unescaped
    assert rgw.get_object_bytes(key) == b"small"


def test_a_file_name_reaches_rgw_as_a_browser_would_send_it(
    rgw: RGWServer, client: httpx.Client, prefix: str, tmp_path: Path
) -> None:
    """RGW keeps the text between the quotes as it stands: a backslash stays one backslash (a quoted-pair
    escape would have doubled it), non-ASCII arrives as UTF-8, and a quote as the %22 it was written as."""
    path = tmp_path / 'C:\\scans\\"été".jpg'
    path.write_bytes(b"small")
    url, fields = presign_form(rgw, prefix)

    key = send(client, url, fields, path)

    assert key == prefix + "C:\\scans\\%22été%22.jpg"
    assert rgw.get_object_bytes(key) == b"small"


def test_expired_policy_is_expired(rgw: RGWServer, client: httpx.Client, prefix: str, photo: Path) -> None:
    url, fields = presign_form(rgw, prefix, expires=1)
    time.sleep(2.1)
    error = refusal(client, url, fields, photo)
    assert error.kind is OutcomeKind.EXPIRED and error.outcome.status == 403
    assert "AccessDenied" in error.outcome.reason


def test_tampered_signature_is_expired(rgw: RGWServer, client: httpx.Client, prefix: str, photo: Path) -> None:
    url, fields = presign_form(rgw, prefix)
    signature = fields["x-amz-signature"]
    fields["x-amz-signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    error = refusal(client, url, fields, photo)
    assert error.kind is OutcomeKind.EXPIRED and error.outcome.status == 403


def test_key_outside_the_prefix_is_access_denied(
    rgw: RGWServer, client: httpx.Client, prefix: str, photo: Path
) -> None:
    url, fields = presign_form(rgw, prefix)
    fields["key"] = f"elsewhere/{uuid.uuid4()}/photo.jpg"
    error = refusal(client, url, fields, photo)
    assert error.kind is OutcomeKind.EXPIRED and error.outcome.status == 403
    assert "AccessDenied" in error.outcome.reason


def test_content_length_range_violated_is_permanent(
    rgw: RGWServer, client: httpx.Client, prefix: str, photo: Path
) -> None:
    url, fields = presign_form(rgw, prefix, extra_conditions=[["content-length-range", 1, 1024]])
    error = refusal(client, url, fields, photo)
    assert error.kind is OutcomeKind.PERMANENT and error.outcome.status == 400
    assert "EntityTooLarge" in error.outcome.reason
