"""The sandbox against real HTTP on 127.0.0.1: the Fulcrum flow, each S3 refusal, faults, the request log."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from hotfolder.sandbox import Sandbox

TOKEN = "sandbox-token"
RECORD = "rec-1"
OWNERS = [{"type": "record", "id": RECORD}]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox") as sb:
        sb.fulcrum.add_record(RECORD, form_values={"6ca0": []})
        yield sb


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    headers = {"X-ApiToken": TOKEN, "Accept": "application/json"}
    with httpx.Client(base_url=sandbox.url, headers=headers, timeout=10) as client:
        yield client


def presign(api: httpx.Client, name: str = "photo 1.jpg", size: int = 0) -> dict[str, Any]:
    body = {"owners": OWNERS, "name": name, "file_size": size, "metadata": {"filename": name}}
    response = api.post("/api/v2/attachments", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def s3_error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/xml"
    return response.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def test_happy_path_presign_upload_finalize_link(sandbox: Sandbox, api: httpx.Client) -> None:
    data = b"\x00jpeg bytes\xff" * 1000
    grant = presign(api, size=len(data))
    assert grant["headers"] == {"x-amz-meta-filename": "photo 1.jpg"}
    assert grant["url"].startswith(f"{sandbox.url}/s3/fulcrum-attachments/{grant['id']}/photo%201.jpg?")

    upload = httpx.put(
        grant["url"], content=data, headers={**grant["headers"], "Content-MD5": content_md5(data)}
    )
    assert upload.status_code == 200 and upload.content == b""
    assert upload.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'

    assert (
        api.post("/api/v2/attachments/finalize", json={"id": grant["id"], "owners": OWNERS}).status_code
        == 201
    )
    shown = api.get(f"/api/v2/attachments/{grant['id']}").json()["attachment"]
    assert shown["status"] == "complete" and shown["complete"] is True and shown["file_size"] == len(data)

    record = api.get(f"/api/v2/records/{RECORD}.json").json()["record"]
    record["form_values"]["6ca0"].append({"attachment_id": grant["id"], "name": "photo 1.jpg"})
    written = api.put(f"/api/v2/records/{RECORD}.json", json={"record": record})
    assert written.status_code == 200, written.text

    stored = sandbox.fulcrum.record(RECORD)
    assert stored["form_values"]["6ca0"] == [{"attachment_id": grant["id"], "name": "photo 1.jpg"}]
    assert stored["version"] == 2
    assert sandbox.fulcrum.attachment_bytes(grant["id"]) == data
    attachment = sandbox.fulcrum.attachment(grant["id"])
    assert attachment["uploaded"] and attachment["finalized"] and attachment["owners"] == OWNERS


def test_put_drops_left_out_values_and_patch_replaces_only_named_keys(
    sandbox: Sandbox, api: httpx.Client
) -> None:
    sandbox.fulcrum.add_record("rec-2", form_values={"a": "1", "b": "2"})
    api.patch("/api/v2/records/rec-2.json", json={"record": {"form_values": {"b": "3"}}}).raise_for_status()
    assert sandbox.fulcrum.record("rec-2")["form_values"] == {"a": "1", "b": "3"}
    api.put("/api/v2/records/rec-2.json", json={"record": {"form_values": {"c": "4"}, "version": 99}})
    assert sandbox.fulcrum.record("rec-2")["form_values"] == {"c": "4"}
    assert sandbox.fulcrum.record("rec-2")["version"] == 3  # read-only: the server counts, not the client
    assert api.put("/api/v2/records/rec-2.json", json={"form_values": {}}).json() == {
        "error": "Bad Request",
        "status": 400,
    }


def test_bad_token_is_401(sandbox: Sandbox) -> None:
    response = httpx.get(f"{sandbox.url}/api/v2/records/{RECORD}.json", headers={"X-ApiToken": "nope"})
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}


def test_presign_refuses_unknown_key_and_missing_owner(api: httpx.Client) -> None:
    body = {"owners": OWNERS, "name": "a.jpg", "attachment": {}}
    response = api.post("/api/v2/attachments", json=body)
    assert response.status_code == 422 and "attachment" in response.json()["error"]
    response = api.post(
        "/api/v2/attachments", json={"owners": [{"type": "record", "id": "ghost"}], "name": "a"}
    )
    assert response.status_code == 422 and "ghost" in response.json()["error"]


def test_finalize_refusals(api: httpx.Client) -> None:
    grant = presign(api)
    missing = api.post("/api/v2/attachments/finalize", json={"id": grant["id"]})
    assert missing.status_code == 422
    assert missing.json() == {"error": "At least one owner type and owner ID is required"}
    early = api.post("/api/v2/attachments/finalize", json={"id": grant["id"], "owners": OWNERS})
    assert early.status_code == 422  # nothing uploaded yet
    unknown = api.post("/api/v2/attachments/finalize", json={"id": "no-such-id", "owners": OWNERS})
    assert unknown.status_code == 404


def test_expired_url_is_access_denied(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.presign_expires = 1
    grant = presign(api)
    time.sleep(1.2)
    response = httpx.put(grant["url"], content=b"late", headers=grant["headers"])
    assert response.status_code == 403 and s3_error_code(response) == "AccessDenied"
    assert "Request has expired" in response.text


def test_tampered_signature_does_not_match(api: httpx.Client) -> None:
    grant = presign(api)
    signature = grant["url"].rsplit("X-Amz-Signature=", 1)[1]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    url = grant["url"].replace(signature, flipped)
    response = httpx.put(url, content=b"data", headers=grant["headers"])
    assert response.status_code == 403 and s3_error_code(response) == "SignatureDoesNotMatch"
    other_key = grant["url"].replace("photo%201.jpg", "other.jpg")
    assert s3_error_code(httpx.put(other_key, content=b"data")) == "SignatureDoesNotMatch"


def test_strict_meta_signs_the_filename_header(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.strict_meta = True
    grant = presign(api)
    assert "x-amz-meta-filename" in grant["url"].split("X-Amz-SignedHeaders=", 1)[1].split("&")[0]
    assert s3_error_code(httpx.put(grant["url"], content=b"x")) == "SignatureDoesNotMatch"
    changed = {"x-amz-meta-filename": "other.jpg"}
    assert s3_error_code(httpx.put(grant["url"], content=b"x", headers=changed)) == "SignatureDoesNotMatch"
    assert httpx.put(grant["url"], content=b"x", headers=grant["headers"]).status_code == 200


def test_wrong_content_md5_is_bad_digest_and_stores_nothing(sandbox: Sandbox, api: httpx.Client) -> None:
    grant = presign(api)
    headers = {**grant["headers"], "Content-MD5": content_md5(b"something else")}
    response = httpx.put(grant["url"], content=b"the bytes", headers=headers)
    assert response.status_code == 400 and s3_error_code(response) == "BadDigest"
    assert not sandbox.fulcrum.attachment(grant["id"])["uploaded"]
    malformed = httpx.put(grant["url"], content=b"the bytes", headers={"Content-MD5": "not-base64!"})
    assert malformed.status_code == 400 and s3_error_code(malformed) == "InvalidDigest"


def test_chunked_upload_without_length_is_411(api: httpx.Client) -> None:
    grant = presign(api)
    response = httpx.put(grant["url"], content=iter([b"chunk one", b"chunk two"]), headers=grant["headers"])
    assert response.status_code == 411 and s3_error_code(response) == "MissingContentLength"


def test_object_over_the_limit_is_entity_too_large(tmp_path: Path) -> None:
    with Sandbox(tmp_path, max_object_size=10) as sb:
        sb.fulcrum.add_record(RECORD)
        with httpx.Client(base_url=sb.url, headers={"X-ApiToken": TOKEN}) as client:
            grant = presign(client)
            response = client.put(grant["url"], content=b"x" * 11)
        assert response.status_code == 400 and s3_error_code(response) == "EntityTooLarge"


def test_body_shorter_than_content_length_is_incomplete(sandbox: Sandbox, api: httpx.Client) -> None:
    grant = presign(api)
    url = urlsplit(grant["url"])
    with socket.create_connection((url.hostname, url.port), timeout=5) as conn:
        head = f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 100\r\n\r\n"
        conn.sendall(head.encode() + b"only ten b")
        conn.shutdown(socket.SHUT_WR)  # the client gives up early but can still read
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"<Code>IncompleteBody</Code>" in answer
    assert not sandbox.fulcrum.attachment(grant["id"])["uploaded"]


def test_record_write_with_missing_attachment_is_422(api: httpx.Client) -> None:
    record = api.get(f"/api/v2/records/{RECORD}.json").json()["record"]
    record["form_values"]["6ca0"] = [{"attachment_id": "ghost", "name": "x.jpg"}]
    response = api.put(f"/api/v2/records/{RECORD}.json", json={"record": record})
    assert response.status_code == 422
    assert response.json() == {"record": {"errors": {"6ca0": ["attachment ghost not found"]}}}


def test_fault_is_served_count_times_then_the_real_answer(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.add_fault("GET", r"^/api/v2/records/", status=503, count=2, body='{"error":"busy"}')
    statuses = [api.get(f"/api/v2/records/{RECORD}.json").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


def test_reset_fault_aborts_the_connection(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.add_fault("POST", r"/attachments$", action="reset")
    with pytest.raises(httpx.TransportError):
        api.post("/api/v2/attachments", json={"owners": OWNERS, "name": "a.jpg"})
    assert presign(api)["id"]  # the next request is answered normally
    assert sandbox.requests()[-2]["status"] == 0


def test_faults_can_be_steered_over_http(sandbox: Sandbox, api: httpx.Client) -> None:
    spec = {"method": "PUT", "path_regex": "^/s3/", "status": 500, "count": 5}
    assert api.post("/_sandbox/faults", json=spec).status_code == 201
    grant = presign(api)
    assert httpx.put(grant["url"], content=b"x").status_code == 500
    assert api.delete("/_sandbox/faults").status_code == 200
    assert httpx.put(grant["url"], content=b"x").status_code == 200
    assert api.get(f"/_sandbox/attachments/{grant['id']}/bytes").content == b"x"
    state = api.get("/_sandbox/state").json()
    assert state["fulcrum"]["attachments"][grant["id"]]["size"] == 1


def test_request_log_never_holds_signatures(sandbox: Sandbox, api: httpx.Client) -> None:
    grant = presign(api)
    httpx.put(grant["url"], content=b"data", headers=grant["headers"]).raise_for_status()
    log = sandbox.requests()
    assert [(e["method"], e["status"]) for e in log] == [("POST", 200), ("PUT", 200)]
    assert all("?" not in e["path"] for e in log)
    assert "X-Amz-Signature" not in repr(log) and "X-Amz-Credential" not in repr(log)


def test_a_url_presigned_by_botocore_verifies(sandbox: Sandbox) -> None:
    # An independent SigV4 implementation, so the signer is not only checked against itself.
    botocore_session = pytest.importorskip("botocore.session")
    from botocore.config import Config

    session = botocore_session.get_session()
    client = session.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=f"{sandbox.url}/s3",
        aws_access_key_id=sandbox.s3.signer.access_key,
        aws_secret_access_key=sandbox.s3.signer.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": "other-bucket", "Key": "dir/a b+c.txt"}, ExpiresIn=60
    )
    assert httpx.put(url, content=b"from botocore").status_code == 200
    blob = sandbox.s3.store.get("other-bucket", "dir/a b+c.txt")
    assert blob is not None and blob.path.read_bytes() == b"from botocore"


# -- MBTiles layers, photos, form owners ---------------------------------------------------------------------


def upload_mbtiles(api: httpx.Client, data: bytes) -> str:
    grant = api.get("/api/v2/file/upload_url.json").json()["file"]
    assert httpx.put(grant["url"], content=data).status_code == 200
    return str(grant["key"])


def test_mbtiles_layer_from_an_uploaded_key(sandbox: Sandbox, api: httpx.Client) -> None:
    key = upload_mbtiles(api, b"SQLite format 3\x00tiles")
    created = api.post("/api/v2/layers.json", json={"layer": {"key": key, "name": "Topo", "type": "mbtiles"}})
    assert created.status_code == 200, created.text
    layer = created.json()["layer"]
    assert layer["name"] == "Topo" and layer["type"] == "mbtiles" and layer["file_size"] == 21
    assert "key" not in layer and key not in str(layer)  # as documented: the API never shows the key
    assert api.get(f"/api/v2/layers/{layer['id']}.json").json()["layer"] == layer
    listing = api.get("/api/v2/layers.json", params={"per_page": 1}).json()
    assert listing["layers"] == [layer] and listing["total_pages"] == 1 and listing["total_count"] == 1
    assert sandbox.fulcrum.layers()[0]["key"] == key
    assert sandbox.fulcrum.layer_bytes(layer["id"]) == b"SQLite format 3\x00tiles"
    assert api.get("/api/v2/layers/nope.json").status_code == 404


def test_layer_refusals_are_422_with_field_errors(api: httpx.Client) -> None:
    def create(layer: dict[str, Any]) -> httpx.Response:
        return api.post("/api/v2/layers.json", json={"layer": layer})

    no_type = create({"name": "x", "key": upload_mbtiles(api, b"t")})
    assert no_type.status_code == 422
    assert no_type.json() == {"layer": {"errors": {"type": [
        "must be one of fulcrum, xyz, tilejson, geojson, mbtiles, wms, feature-service"]}}}
    blank = create({"name": " ", "type": "mbtiles", "key": upload_mbtiles(api, b"t")}).json()
    assert blank["layer"]["errors"] == {"name": ["can't be blank"]}
    not_uploaded = api.get("/api/v2/file/upload_url.json").json()["file"]["key"]
    assert "key" in create({"name": "x", "type": "mbtiles", "key": not_uploaded}).json()["layer"]["errors"]
    assert "key" in create({"name": "x", "type": "mbtiles", "key": "made-up"}).json()["layer"]["errors"]
    assert create({"name": "x", "type": "xyz"}).json() == {"layer": {"errors": {"source": ["can't be blank"]}}}
    assert api.post("/api/v2/layers.json", json={"name": "x"}).status_code == 400


def test_layer_listing_pages(api: httpx.Client) -> None:
    for number in range(3):
        api.post("/api/v2/layers.json", json={"layer": {"name": f"L{number}", "type": "xyz", "source": "s"}})
    second = api.get("/api/v2/layers.json", params={"page": 2, "per_page": 2}).json()
    assert [layer["name"] for layer in second["layers"]] == ["L2"]
    assert (second["current_page"], second["total_pages"], second["total_count"]) == (2, 2, 3)


def post_photo(api: httpx.Client, access_key: str | None, data: bytes | None) -> httpx.Response:
    fields = {} if access_key is None else {"photo[access_key]": access_key}
    files = {} if data is None else {"photo[file]": ("p.jpg", data, "image/jpeg")}
    return api.post("/api/v2/photos.json", data=fields, files=files or {"other": ("x", b"")})


def test_photo_multipart_is_stored_and_a_taken_key_is_422(sandbox: Sandbox, api: httpx.Client) -> None:
    # Larger than one read, with the boundary's first bytes inside the data, to exercise the streaming parser.
    data = (b"\r\n--" + os.urandom(50)) * 40_000
    created = post_photo(api, "key-1", data)
    assert created.status_code == 200, created.text
    assert created.json()["photo"]["access_key"] == "key-1"
    assert sandbox.fulcrum.photo_bytes("key-1") == data
    assert sandbox.fulcrum.photo("key-1")["file_size"] == len(data)
    shown = api.get("/api/v2/photos/key-1.json").json()["photo"]
    assert shown["uploaded"] is True and shown["file_size"] == len(data)
    assert api.get("/api/v2/photos/key-1.jpg").content == data
    assert api.get("/api/v2/photos/nope.json").status_code == 404

    again = post_photo(api, "key-1", b"other bytes")
    assert again.status_code == 422
    assert again.json() == {"photo": {"errors": {"access_key": ["has already been taken"]}}}
    assert sandbox.fulcrum.photo_bytes("key-1") == data
    assert post_photo(api, None, b"x").json()["photo"]["errors"] == {"access_key": ["can't be blank"]}
    assert post_photo(api, "key-2", None).json()["photo"]["errors"] == {"file": ["can't be blank"]}
    assert api.post("/api/v2/photos.json", json={"photo": {}}).status_code == 400
    assert len(sandbox.fulcrum.photos()) == 1


def test_record_photo_items_must_name_existing_photos(api: httpx.Client) -> None:
    assert post_photo(api, "cam-1", b"\xff\xd8jpeg").status_code == 200
    record = api.get(f"/api/v2/records/{RECORD}.json").json()["record"]
    record["form_values"]["9f1b"] = [{"photo_id": "cam-1", "caption": ""}, {"photo_id": "ghost", "caption": ""}]
    refused = api.put(f"/api/v2/records/{RECORD}.json", json={"record": record})
    assert refused.status_code == 422
    assert refused.json() == {"record": {"errors": {"9f1b": ["photo ghost not found"]}}}
    record["form_values"]["9f1b"].pop()
    assert api.put(f"/api/v2/records/{RECORD}.json", json={"record": record}).status_code == 200


def test_form_owned_attachment_needs_an_existing_form(sandbox: Sandbox, api: httpx.Client) -> None:
    owners = [{"type": "form", "id": "form-9"}]
    assert api.post("/api/v2/attachments", json={"owners": owners, "name": "a.pdf"}).status_code == 422
    sandbox.fulcrum.add_form("form-9")
    grant = api.post("/api/v2/attachments", json={"owners": owners, "name": "a.pdf"}).json()
    assert httpx.put(grant["url"], content=b"pdf", headers=grant["headers"]).status_code == 200
    assert api.post("/api/v2/attachments/finalize", json={"id": grant["id"], "owners": owners}).status_code == 201
    assert api.get(f"/api/v2/attachments/{grant['id']}").json()["attachment"]["complete"] is True


def test_photo_body_cut_short_stores_nothing(sandbox: Sandbox, api: httpx.Client) -> None:
    class ClientGaveUp(Exception):
        pass

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="photo[access_key]"\r\n\r\ncut\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="photo[file]"; filename="a.jpg"\r\n\r\npartial'
        raise ClientGaveUp

    headers = {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "100000"}
    with pytest.raises(ClientGaveUp):
        api.post("/api/v2/photos.json", content=body(), headers=headers)
    deadline = time.monotonic() + 5
    while not sandbox.requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r["status"] for r in sandbox.requests()] == [400]
    assert sandbox.fulcrum.photos() == [] and api.get("/api/v2/photos/cut.json").status_code == 404
