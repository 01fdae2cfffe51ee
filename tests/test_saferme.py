"""SaferMe over real HTTP on 127.0.0.1: each file reaches the report's field once, after processing.

End-to-end tests run the daemon (in process, or as a real process where the log or a kill matters)
against the sandbox. The last tests hold the simulator to S3's POST rules and SaferMe's report rules,
since the daemon is only as well tested as the simulator is strict.
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.config import Config

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.sandbox import Sandbox
from hotfolder.service import make_client
from hotfolder.transfer import FileIdentity, FilePart, MultipartForm, hash_file, post_form
from hotfolder.vendors.base import StepContext
from hotfolder.vendors.saferme import SaferMe, saferme_error_detail
from tests.harness import (
    TOKEN,
    Site,
    hotfolder,
    kill9,
    rewrite_once_sent,
    run_once_in_process,
    simulated_site,
    wait_for,
    write_config,
)

TEAM = "42"
REPORT = "49"
FIELD = "f_1_18_9"  # a FileUpload field
IMAGE_FIELD = "f_1_8_6"
TEXT_FIELD = "f_1_6_4"
EXISTING = [101, 102]  # attachments already on the report: they must survive every link
HEADERS = {
    "Authorization": f"Token token={TOKEN}",
    "X-AppId": "com.thundermaps.saferme",
    "X-TeamId": TEAM,
    "X-InstallationId": "test-installation",
    "Accept": "application/json",
}
AUTHORIZE = r"^/api/v4/file_attachments/upload_authorization$"
REPORT_PATH = rf"^/api/v4/reports/{REPORT}$"


def _target(url: str, **options: Any) -> dict[str, Any]:
    # The harness puts the one test token in FULCRUM_TOKEN (for this process and the daemon's alike).
    return {
        "vendor": "saferme", "url": url, "timeout": "10s", "token": "${FULCRUM_TOKEN}", "team_id": TEAM,
        "field": FIELD, "poll_interval": "50ms", "poll_attempts": 6, **options,
    }


def _configure(site: Site, **options: Any) -> None:
    site.config_path = write_config(site.root, site.sandbox.url, targets={"saferme": _target(site.sandbox.url,
                                                                                              **options)})


def _seed(sandbox: Sandbox) -> None:
    sandbox.saferme.tokens = {TOKEN}
    sandbox.saferme.add_report(REPORT, title="Fence down", form_fields=[
        {"key": FIELD, "value": list(EXISTING)},
        {"key": IMAGE_FIELD, "field_type": "Image", "value": []},
        {"key": TEXT_FIELD, "field_type": "ShortTextBox", "value": "keep me"},
    ])




@pytest.fixture
def ssite(tmp_path: Path) -> Iterator[Site]:
    """An installation with a saferme target, and report 49 with two attachments in the field already."""
    with simulated_site(tmp_path, _seed) as site:
        _configure(site)
        yield site


def _drop(site: Site, name: str, data: bytes, report: str = REPORT) -> None:
    site.drop(report, name, data, target="saferme")


def _field(site: Site) -> list[int]:
    return list(site.sandbox.saferme.field_value(REPORT, FIELD))


def _ours(site: Site) -> list[int]:
    value = _field(site)
    assert value[: len(EXISTING)] == EXISTING, f"existing attachments were disturbed: {value}"
    return value[len(EXISTING):]


def _statuses(site: Site, method: str, pattern: str) -> list[int]:
    import re

    return [r["status"] for r in site.sandbox.requests() if r["method"] == method and re.search(pattern, r["path"])]


def _sidecar(site: Site, name: str) -> dict[str, Any]:
    return json.loads((site.failed / "saferme" / REPORT / f"{name}.error.json").read_text())


def _log_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


# -- end to end ----------------------------------------------------------------------------------------


def test_files_reach_the_field_once_with_their_bytes(ssite: Site) -> None:
    files = {"scan 1.pdf": b"%PDF-1.4 " + os.urandom(3 * 1024 * 1024 + 17), "photo.png": os.urandom(40_000)}
    for name, data in files.items():
        _drop(ssite, name, data)

    assert run_once_in_process(ssite) == 0

    ours = _ours(ssite)
    assert len(ours) == 2 and len(set(ours)) == 2
    by_name = {ssite.sandbox.saferme.file_attachment(i)["filename"]: i for i in ours}
    assert sorted(by_name) == sorted(files)  # key = key_prefix + the file's own name
    for name, data in files.items():
        attachment = ssite.sandbox.saferme.file_attachment(by_name[name])
        assert ssite.sandbox.saferme.blob_bytes(attachment["id"]) == data
        assert attachment["content_type"] == mimetypes.guess_type(name)[0]
        assert (ssite.done / "saferme" / REPORT / name).read_bytes() == data
    assert ssite.sandbox.saferme.field_value(REPORT, TEXT_FIELD) == "keep me"  # PATCH named only our field
    assert _statuses(ssite, "POST", r"^/s3/") == [201, 201]
    assert not any(ssite.failed.rglob("*"))


def test_a_file_rewritten_after_it_was_sent_replaces_its_stale_attachment_in_the_field(ssite: Site) -> None:
    first, second = os.urandom(30_000), os.urandom(20_000)
    _drop(ssite, "photo.png", first)
    path = ssite.inbox / "saferme" / REPORT / "photo.png"
    ssite.sandbox.add_fault("GET", REPORT_PATH, count=1, action="delay", delay=2.0)

    rewrite_once_sent(ssite, path, second, lambda: _statuses(ssite, "POST", r"^/s3/"))

    (ours,) = _ours(ssite)  # the attachments that were there before are kept, in their order
    assert ssite.sandbox.saferme.blob_bytes(ours) == second
    done = ssite.done / "saferme" / REPORT / "photo.png"
    assert done.read_bytes() == second
    note = json.loads((done.parent / "photo.png.resent.json").read_text())
    stale = note["stale"][0]["file_attachment_id"]
    assert ssite.sandbox.saferme.blob_bytes(stale) == first and note["ids"]["replaced"] == [str(stale)]


def test_processing_is_polled_with_growing_waits(ssite: Site, tmp_path: Path) -> None:
    ssite.sandbox.saferme.processing_polls = 3  # create 202, poll 202, poll 202, poll 200
    _configure(ssite, poll_interval="100ms")
    _drop(ssite, "slow.pdf", b"%PDF-1.4 needs processing")
    log = tmp_path / "daemon.log"

    assert hotfolder("once", "-c", str(ssite.config_path), log=log).wait(60) == 0, log.read_text()[-3000:]

    (attachment_id,) = _ours(ssite)
    assert _statuses(ssite, "GET", rf"^/api/v4/file_attachments/{attachment_id}$") == [202, 202, 200]
    waits = [e for e in _log_events(log) if e.get("step") == "finalize" and e.get("outcome") == "pending"]
    assert [w["retry_in"] for w in waits] == [0.1, 0.2, 0.4]  # poll_interval, doubled after each poll
    assert [w["ids"]["polls"] for w in waits] == [0, 1, 2]
    (job,) = ssite.jobs()
    assert job.state is State.DONE and job.attempts == 0  # waiting is not a setback
    assert job.vendor["file_attachment_id"] == attachment_id and job.vendor["polls"] == 3
    assert TOKEN not in log.read_text()


def test_processing_that_never_ends_fails_with_a_reason(ssite: Site) -> None:
    ssite.sandbox.saferme.processing_polls = 1000
    _configure(ssite, poll_attempts=2)
    _drop(ssite, "stuck.pdf", b"%PDF-1.4 forever processing")

    assert run_once_in_process(ssite) == 1

    sidecar = _sidecar(ssite, "stuck.pdf")
    assert sidecar["step"] == "finalize"
    assert "still processing file attachment" in sidecar["reason"] and "after 2 polls" in sidecar["reason"]
    assert _field(ssite) == EXISTING
    assert _statuses(ssite, "PATCH", REPORT_PATH) == []
    (attachment,) = ssite.sandbox.saferme.file_attachments()  # polled, never created twice
    assert _statuses(ssite, "GET", rf"^/api/v4/file_attachments/{attachment['id']}$") == [202, 202]


def test_refused_content_type_is_named_in_the_sidecar(ssite: Site) -> None:
    _drop(ssite, "setup.exe", b"MZ not for SaferMe")
    refused = mimetypes.guess_type("setup.exe")[0] or "application/octet-stream"

    assert run_once_in_process(ssite) == 1

    sidecar = _sidecar(ssite, "setup.exe")
    assert sidecar["step"] == "presign" and sidecar["http_status"] == 422
    assert f"content type {refused} refused by SaferMe" in sidecar["reason"]
    assert "is not allowed" in sidecar["reason"]  # SaferMe's own words, from its errors body
    assert (ssite.failed / "saferme" / REPORT / "setup.exe").read_bytes() == b"MZ not for SaferMe"
    assert _statuses(ssite, "POST", r"^/s3/") == []


def test_enhance_your_calm_is_waited_out_then_done(ssite: Site) -> None:
    calm = json.dumps({"errors": ["Enhance your calm"], "failures": {}, "error_codes": {"base": ["rate_limited"]}})
    ssite.sandbox.add_fault("GET", AUTHORIZE, status=420, headers={"Retry-After": "1"}, body=calm)
    ssite.sandbox.add_fault("PATCH", REPORT_PATH, status=420, body=calm)  # no Retry-After: our own backoff
    _drop(ssite, "calm.pdf", b"%PDF-1.4 rate limited twice")

    assert run_once_in_process(ssite) == 0

    assert len(_ours(ssite)) == 1
    assert _statuses(ssite, "GET", AUTHORIZE) == [420, 200]
    assert _statuses(ssite, "PATCH", REPORT_PATH) == [420, 204]
    times = {(r["method"], r["status"]): r["at"] for r in ssite.sandbox.requests()}
    assert times[("GET", 200)] - times[("GET", 420)] >= 0.9  # Retry-After honoured
    (job,) = ssite.jobs()
    assert job.attempts == 2  # each 420 was a transient setback, retried, not a failure


def test_kill_9_during_link_then_restart_links_exactly_once(ssite: Site, tmp_path: Path) -> None:
    # Hold the report write long enough to kill the daemon while it is at SaferMe.
    ssite.sandbox.add_fault("PATCH", REPORT_PATH, action="delay", delay=3.0)
    data = os.urandom(200_000)
    _drop(ssite, "killed.png", data)
    log = tmp_path / "daemon.log"
    process = hotfolder("run", "-c", str(ssite.config_path), log=log)
    try:
        wait_for(lambda: any(j.state is State.LINK for j in ssite.jobs()), what="job at link")
        time.sleep(0.7)  # the PATCH is now at the simulator, held
    finally:
        kill9(process)
    assert (ssite.inbox / "saferme" / REPORT / "killed.png").exists()  # nothing lost
    # Let the held write land: the link happened at SaferMe, the journal does not know it.
    wait_for(lambda: _statuses(ssite, "PATCH", REPORT_PATH) == [204], what="the held link to land")
    (attachment_id,) = _ours(ssite)

    restarted = hotfolder("once", "-c", str(ssite.config_path), log=log)
    assert restarted.wait(60) == 0, log.read_text()[-3000:]

    assert _field(ssite) == [*EXISTING, attachment_id]  # exactly once, nothing else touched
    assert _statuses(ssite, "PATCH", REPORT_PATH) == [204]  # the restart read the report and did not write
    assert ssite.sandbox.saferme.blob_bytes(attachment_id) == data
    assert (ssite.done / "saferme" / REPORT / "killed.png").read_bytes() == data
    text = log.read_text()
    assert '"link_was_already_there": true' in text and TOKEN not in text


# -- the adapter on its own ---------------------------------------------------------------------------


def _adapter(site: Site) -> SaferMe:
    target = site.settings().targets["saferme"]
    return SaferMe(target, make_client(target, workers=1))


def _ctx(path: Path, ids: dict[str, Any] | None = None) -> StepContext:
    digests = hash_file(path, ("sha256",))
    return StepContext(
        job_id=1, target="saferme", record=REPORT, group=None, name=path.name, path=path,
        identity=digests.identity, digests=digests, ids=dict(ids or {}),
    )


def test_upload_after_a_restart_asks_for_a_new_authorization(ssite: Site, tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"png bytes")
    adapter = _adapter(ssite)
    with pytest.raises(StepError) as caught:
        adapter.upload(_ctx(path))  # scratch is empty, as after a restart
    assert caught.value.kind is OutcomeKind.NEED_PRESIGN

    ctx = _ctx(path)
    ids = adapter.presign(ctx)
    assert ids == {"upload_key_prefix": ids["upload_key_prefix"], "content_type": "image/png"}
    assert "policy" not in json.dumps(ids)  # the form's secrets stay in memory
    assert adapter.upload(ctx)["s3_key"] == ids["upload_key_prefix"] + "photo.png"
    assert "upload_authorization" not in ctx.scratch  # spent


def test_error_bodies_read_as_one_line() -> None:
    body = {"errors": ["Report is invalid"], "failures": {"f_1_8_6": ["accepts only images"]},
            "error_codes": {"f_1_8_6": ["invalid_content_type"]}}
    assert saferme_error_detail(body) == (
        "Report is invalid; f_1_8_6 accepts only images; codes: f_1_8_6=invalid_content_type")
    assert saferme_error_detail({"errors": {"key": ["can't be blank"]}}) == "key can't be blank"
    assert saferme_error_detail(["not", "a", "dict"]) is None


# -- the simulator keeps S3's POST rules and SaferMe's report rules ------------------------------------


@pytest.fixture
def api(ssite: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ssite.sandbox.url, headers=HEADERS, timeout=10) as client:
        yield client


def _authorization(api: httpx.Client, content_type: str = "image/png") -> dict[str, Any]:
    answer = api.get("/api/v4/file_attachments/upload_authorization", params={"content_type": content_type})
    assert answer.status_code == 200, answer.text
    authorization: dict[str, Any] = answer.json()["upload_authorization"]
    return authorization


def _multipart(parts: list[tuple[str, str]], file: bytes, after: list[tuple[str, str]]) -> tuple[bytes, str]:
    """A form with fields, the file, and more fields after it (which S3 must ignore)."""
    form = MultipartForm([*parts, FilePart("file", "pic.png", "image/png", len(file)), *after])
    return b"".join(form.body([file])), form.content_type


def test_post_form_rules(ssite: Site, api: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(os.urandom(70_000))
    identity = FileIdentity.of(os.stat(path))

    def post(fields: dict[str, str]) -> StepError:
        with pytest.raises(StepError) as caught:
            post_form(api, auth["url"], fields, path, identity, filename="pic.png", content_type="image/png")
        return caught.value

    auth = _authorization(api)
    base = {**auth["fields"], "key": auth["key_prefix"] + "pic.png"}
    uncovered = post({**base, "x-amz-meta-owner": "me"})
    assert uncovered.kind is OutcomeKind.EXPIRED and "Extra input fields: x-amz-meta-owner" in uncovered.outcome.reason
    outside = post({**base, "key": "async_uploads/elsewhere/pic.png"})
    assert outside.outcome.status == 403 and "Policy Condition failed" in outside.outcome.reason
    tampered = post({**base, "x-amz-signature": "0" * 64})
    assert tampered.kind is OutcomeKind.EXPIRED and "SignatureDoesNotMatch" in tampered.outcome.reason
    no_type = post({k: v for k, v in base.items() if k != "Content-Type"})
    assert no_type.outcome.status == 403  # required_fields says Content-Type; the policy holds to it

    ssite.sandbox.saferme.max_file_size = 1024  # → content-length-range [1, 1024] in the policy
    small = _authorization(api)
    too_big = post({**small["fields"], "key": small["key_prefix"] + "pic.png"})
    assert too_big.kind is OutcomeKind.PERMANENT and "EntityTooLarge" in too_big.outcome.reason
    ssite.sandbox.saferme.max_file_size = None

    ssite.sandbox.presign_expires = 1
    late = _authorization(api)
    time.sleep(1.1)
    expired = post({**late["fields"], "key": late["key_prefix"] + "pic.png"})
    assert expired.kind is OutcomeKind.EXPIRED and "Policy expired" in expired.outcome.reason
    assert ssite.sandbox.s3.store.all() == []  # no refused form stored a byte

    # ${filename}, and fields after the file part ignored (a late "key" would otherwise move the object).
    body, content_type = _multipart(list(auth["fields"].items()), b"tiny", after=[("key", "elsewhere/x")])
    stored = api.post(auth["url"], content=body, headers={"Content-Type": content_type})
    assert stored.status_code == 201 and f"<Key>{auth['key']}</Key>" in stored.text  # key field as given
    chunked = api.post(auth["url"], content=iter([body]), headers={"Content-Type": content_type})
    assert chunked.status_code == 411


@pytest.mark.parametrize("name", ["a & b.txt", 'say "cheese", café\\.txt'])
def test_a_form_presigned_by_botocore_is_accepted(ssite: Site, tmp_path: Path, name: str) -> None:
    """Our policy check is real SigV4: a form signed by an independent client passes it. The file name,
    quote and backslash and all, reaches ${filename} as it was (the writer's escaping undone)."""
    s3 = ssite.sandbox.s3
    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=f"{ssite.sandbox.url}/s3", region_name=s3.signer.region,
        aws_access_key_id=s3.signer.access_key, aws_secret_access_key=s3.signer.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    form = client.generate_presigned_post(
        "any-bucket", "up/${filename}", Fields={"success_action_status": "201"},
        Conditions=[["starts-with", "$key", "up/"], {"success_action_status": "201"}], ExpiresIn=60,
    )
    path = tmp_path / name
    path.write_bytes(b"signed elsewhere")
    with httpx.Client() as http:
        key = post_form(http, form["url"], form["fields"], path, FileIdentity.of(os.stat(path)),
                        filename=path.name, content_type="text/plain")
    assert key == f"up/{name}"
    blob = s3.store.get("any-bucket", key)
    assert blob is not None and blob.path.read_bytes() == b"signed elsewhere"


def test_report_rules(ssite: Site, api: httpx.Client, tmp_path: Path) -> None:
    auth = _authorization(api, "application/pdf")
    path = tmp_path / "doc.pdf"
    path.write_bytes(b"%PDF-1.4 report rules")
    key = post_form(api, auth["url"], {**auth["fields"], "key": auth["key_prefix"] + "doc.pdf"}, path,
                    FileIdentity.of(os.stat(path)), filename="doc.pdf", content_type="application/pdf")
    assert api.post("/api/v4/file_attachments", json={"file_attachment": {"key": "async_uploads/x/y"}}
                    ).status_code == 422  # never uploaded
    created = api.post("/api/v4/file_attachments", json={"file_attachment": {"key": key}})
    assert created.status_code == 202  # processing_polls = 1: the first read is still processing
    pdf = created.json()["id"]
    assert api.get(f"/api/v4/file_attachments/{pdf}").status_code == 200

    def patch(body: Any) -> httpx.Response:
        return api.patch(f"/api/v4/reports/{REPORT}", json=body)

    def fields(*pairs: tuple[str, Any]) -> dict[str, Any]:
        return {"report": {"form_fields": [{"key": k, "value": v} for k, v in pairs]}}

    unwrapped = patch({"form_fields": [{"key": FIELD, "value": [*EXISTING, pdf]}]})
    assert unwrapped.status_code == 422
    not_an_image = patch(fields((IMAGE_FIELD, [pdf])))
    assert not_an_image.status_code == 422 and "not an image" in not_an_image.text
    assert patch(fields((FIELD, [*EXISTING, pdf]), (IMAGE_FIELD, [pdf]))).status_code == 422  # in two fields
    assert patch(fields((FIELD, [*EXISTING, 999]))).status_code == 422  # no such attachment
    assert patch(fields((FIELD, [*EXISTING, pdf]))).status_code == 204
    assert _field(ssite) == [*EXISTING, pdf]

    bare = api.get(f"/api/v4/reports/{REPORT}").json()
    assert "form_fields" not in bare  # only sent when asked for
    full = api.get(f"/api/v4/reports/{REPORT}", params={"fields": "form_fields"}).json()
    (field,) = [f for f in full["form_fields"] if f["key"] == FIELD]
    assert [item["id"] for item in field["value"]] == [*EXISTING, pdf]  # objects, as the docs show
    assert httpx.get(f"{ssite.sandbox.url}/api/v4/reports/{REPORT}",
                     headers={**HEADERS, "X-TeamId": "7"}).status_code == 403
    assert httpx.get(f"{ssite.sandbox.url}/api/v4/reports/{REPORT}",
                     headers={**HEADERS, "Authorization": "Token token=nope"}).status_code == 401
