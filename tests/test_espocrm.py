"""EspoCRM end to end over real HTTP on 127.0.0.1: inline and chunked uploads, both field kinds, refusals,
a kill during the link, and a 100 MB upload whose memory stays flat.

The site has two EspoCRM targets: ``espo-docs`` puts a file into Document.file (a File field) and
``espo-notes`` adds files to Note.attachments (an Attachment-Multiple field). Bytes are checked the way
a user would: downloaded again with ``GET Attachment/file/{id}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.sandbox import Sandbox
from hotfolder.transfer import FileIdentity, base64_json_body, data_uri_prefix
from tests.harness import (
    Site,
    hotfolder,
    kill9,
    rewrite_once_sent,
    run_once_in_process,
    simulated_site,
    wait_for,
    write_config,
)

API_KEY = "sandbox-espo-key"
HMAC_KEY, HMAC_SECRET = "sandbox-hmac-key", "sandbox-hmac-secret"
DOCS, NOTES = "espo-docs", "espo-notes"


def _targets(url: str, **options: Any) -> dict[str, dict[str, Any]]:
    common = {"vendor": "espocrm", "url": url, "api_key": API_KEY, "timeout": "20s", **options}
    return {
        DOCS: {**common, "entity": "Document", "field": "file", "field_type": "file"},
        NOTES: {**common, "entity": "Note", "field": "attachments", "field_type": "attachments"},
    }


def _configure(site: Site, **options: Any) -> None:
    write_config(site.root, site.sandbox.url, targets=_targets(site.sandbox.url, **options))


def _seed(sandbox: Sandbox) -> None:
    sandbox.espocrm.add_record("Document", "doc-1", name="Site plan")
    sandbox.espocrm.add_record("Note", "note-1", post="Inspection")




@pytest.fixture
def espo(tmp_path: Path) -> Iterator[Site]:
    with simulated_site(tmp_path, _seed) as site:
        _configure(site)
        yield site


def _download(site: Site, attachment_id: str) -> bytes:
    """The user's check: the bytes EspoCRM serves for the attachment."""
    url = f"{site.sandbox.url}/api/v1/Attachment/file/{attachment_id}"
    response = httpx.get(url, headers={"X-Api-Key": API_KEY}, timeout=30)
    assert response.status_code == 200
    return response.content


def _document_file(site: Site, record: str = "doc-1") -> str:
    attachment_id = site.sandbox.espocrm.record("Document", record)["fileId"]
    assert attachment_id, f"Document {record} has no file"
    return str(attachment_id)


def _note_attachments(site: Site, record: str = "note-1") -> list[str]:
    return list(site.sandbox.espocrm.record("Note", record)["attachmentsIds"])


def _requests(site: Site, method: str, pattern: str) -> list[dict[str, Any]]:
    return [r for r in site.sandbox.requests() if r["method"] == method and pattern in r["path"]]


def _sidecar(site: Site, target: str, record: str, name: str) -> dict[str, Any]:
    path = site.failed / target / record / f"{name}.error.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


# -- the streamed body itself --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 3 * 1024 + 1, 10_007])
def test_base64_json_body_is_exact_valid_json(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    prefix = b'{"name": "f.bin", "file": "' + data_uri_prefix("application/octet-stream")
    body, length = base64_json_body(prefix, path, FileIdentity.of(path.stat()), b'"}', chunk_size=1000)
    sent = b"".join(body)
    assert len(sent) == length
    value = json.loads(sent)["file"]
    assert value.startswith("data:application/octet-stream;base64,")
    assert base64.b64decode(value.partition(",")[2], validate=True) == data


def test_base64_json_body_refuses_a_file_that_changed(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(5000))
    body, _ = base64_json_body(b"{", path, FileIdentity.of(path.stat()), b"}")
    path.write_bytes(os.urandom(4000))  # rewritten before the body is sent
    with pytest.raises(StepError) as caught:
        b"".join(body)
    assert caught.value.kind is OutcomeKind.FILE_CHANGED


# -- happy paths -------------------------------------------------------------------------------------------


def test_file_field_and_attachment_multiple_receive_the_bytes(espo: Site) -> None:
    pdf, photo, notes = b"%PDF-1.4 " + os.urandom(70_000), os.urandom(5_000), b"checked the fence\n"
    espo.drop("doc-1", "plan.pdf", pdf, target=DOCS)
    espo.drop("note-1", "photo.jpg", photo, target=NOTES)
    espo.drop("note-1", "notes.txt", notes, target=NOTES)

    assert run_once_in_process(espo) == 0

    assert _download(espo, _document_file(espo)) == pdf
    attached = _note_attachments(espo)
    assert len(attached) == 2
    assert sorted(_download(espo, a) for a in attached) == sorted([photo, notes])
    assert espo.sandbox.espocrm.record("Document", "doc-1")["name"] == "Site plan"  # the rest survived
    assert (espo.done / DOCS / "doc-1" / "plan.pdf").read_bytes() == pdf
    assert not any(espo.failed.rglob("*"))
    # No chunk endpoint was needed for small files: one POST Attachment each.
    assert len(_requests(espo, "POST", "/api/v1/Attachment")) == 3


@pytest.mark.parametrize("target", [DOCS, NOTES])
def test_a_file_rewritten_after_it_was_sent_replaces_its_stale_attachment(espo: Site, target: str) -> None:
    """File field and Attachment-Multiple alike: the record ends with the new bytes once, the stale copy
    off it, and what was there before us kept."""
    entity, record, name = ("Document", "doc-1", "plan.pdf") if target == DOCS else ("Note", "note-2", "photo.jpg")
    service = espo.sandbox.espocrm
    kept = ""
    if target == NOTES:
        kept = service.add_attachment("Note", "attachments", b"someone else's", "earlier.txt")
        service.add_record("Note", record, post="Has a file", attachmentsIds=[kept])
    first, second = b"%PDF-1.4 " + os.urandom(3_000), b"%PDF-1.4 " + os.urandom(4_000)
    path = espo.drop(record, name, first, target=target)
    espo.sandbox.add_fault("GET", rf"^/api/v1/{entity}/{record}$", count=1, action="delay", delay=2.0)

    rewrite_once_sent(espo, path, second, lambda: _requests(espo, "POST", "/api/v1/Attachment"))

    attached = [_document_file(espo)] if target == DOCS else _note_attachments(espo, record)
    ours = [a for a in attached if a != kept]
    assert [_download(espo, a) for a in ours] == [second]
    assert (target == NOTES) == (kept in attached)
    done = espo.done / target / record / name
    assert done.read_bytes() == second
    note = json.loads((done.parent / f"{name}.resent.json").read_text())
    assert note["ids"]["replaced"] == [note["stale"][0]["attachment_id"]] != [ours[0]]


def test_attachments_already_on_the_record_are_kept(espo: Site) -> None:
    service = espo.sandbox.espocrm
    existing = [service.add_attachment("Note", "attachments", b"old %d" % n, f"old-{n}.txt") for n in range(2)]
    service.add_record("Note", "note-2", post="Has files", attachmentsIds=existing)
    espo.drop("note-2", "new.txt", b"the new one", target=NOTES)

    assert run_once_in_process(espo) == 0

    attached = _note_attachments(espo, "note-2")
    assert attached[:2] == existing and len(attached) == 3
    assert _download(espo, attached[2]) == b"the new one"
    assert [_download(espo, a) for a in existing] == [b"old 0", b"old 1"]


def test_hmac_authentication(espo: Site) -> None:
    _configure(espo, api_key=HMAC_KEY, secret=HMAC_SECRET)
    espo.drop("doc-1", "signed.pdf", b"%PDF signed", target=DOCS)
    espo.drop("note-1", "signed.txt", b"signed too", target=NOTES)

    assert run_once_in_process(espo) == 0

    assert _download(espo, _document_file(espo)) == b"%PDF signed"
    assert [_download(espo, a) for a in _note_attachments(espo)] == [b"signed too"]
    assert all(r["status"] == 200 for r in espo.sandbox.requests() if r["path"].startswith("/api/v1/"))


def test_hmac_with_a_wrong_secret_is_refused(espo: Site) -> None:
    _configure(espo, api_key=HMAC_KEY, secret="not-the-secret")
    espo.drop("doc-1", "signed.pdf", b"%PDF", target=DOCS)
    assert run_once_in_process(espo) == 1
    sidecar = _sidecar(espo, DOCS, "doc-1", "signed.pdf")
    assert sidecar["http_status"] == 401 and "bad API key or HMAC secret" in sidecar["reason"]


# -- chunked mode ------------------------------------------------------------------------------------------


def test_chunked_upload_reassembles_the_file(espo: Site) -> None:
    _configure(espo, chunk_threshold="8KB", chunk_size=4096)
    data = os.urandom(10_001)  # 3 chunks: 4096 + 4096 + 1809
    espo.drop("note-1", "scan.jpg", data, target=NOTES)

    assert run_once_in_process(espo) == 0

    (attachment_id,) = _note_attachments(espo)
    assert _download(espo, attachment_id) == data
    assert espo.sandbox.espocrm.attachment(attachment_id)["isBeingUploaded"] is False
    assert len(_requests(espo, "POST", "/Attachment/chunk/")) == 3


def test_a_chunk_failing_midway_restarts_with_a_fresh_attachment(espo: Site) -> None:
    _configure(espo, chunk_threshold="8KB", chunk_size=4096)
    # The first chunk passes untouched (a zero-effect delay fault), the second is answered 500.
    espo.sandbox.add_fault("POST", r"/Attachment/chunk/", action="delay", delay=0.001)
    espo.sandbox.add_fault("POST", r"/Attachment/chunk/", status=500)
    data = b"%PDF-1.7 " + os.urandom(12_000)
    espo.drop("doc-1", "long.pdf", data, target=DOCS)

    assert run_once_in_process(espo) == 0

    linked = _document_file(espo)
    assert _download(espo, linked) == data
    attachments = {a["id"]: a for a in espo.sandbox.espocrm.attachments()}
    assert len(attachments) == 2
    (broken,) = set(attachments) - {linked}
    assert attachments[broken]["isBeingUploaded"] is True  # abandoned half way, never completed
    assert attachments[broken]["received"] == 4096
    (job,) = [j for j in espo.jobs() if j.target == DOCS]
    assert job.vendor["abandoned_attachment_ids"] == [broken]
    assert [r["status"] for r in _requests(espo, "POST", "/Attachment/chunk/")] == [200, 500, 200, 200, 200]


# -- refusals ----------------------------------------------------------------------------------------------


def test_a_refused_file_type_fails_with_the_vendors_reason(espo: Site) -> None:
    espo.drop("doc-1", "setup.exe", b"MZ\x90\x00", target=DOCS)
    assert run_once_in_process(espo) == 1

    assert (espo.failed / DOCS / "doc-1" / "setup.exe").read_bytes() == b"MZ\x90\x00"
    sidecar = _sidecar(espo, DOCS, "doc-1", "setup.exe")
    assert sidecar["step"] == "upload" and sidecar["http_status"] == 403
    assert "Not allowed file type." in sidecar["reason"]
    assert sidecar["attempts"] == 0  # a refusal is not retried
    assert espo.sandbox.espocrm.record("Document", "doc-1")["fileId"] is None


def test_a_bad_api_key_fails_without_leaking_it(espo: Site, tmp_path: Path) -> None:
    _configure(espo, api_key="wrong-espo-key-4711")
    espo.drop("note-1", "a.txt", b"x", target=NOTES)
    log = tmp_path / "daemon.log"
    assert hotfolder("once", "-c", str(espo.config_path), log=log).wait(60) == 1

    sidecar_text = (espo.failed / NOTES / "note-1" / "a.txt.error.json").read_text()
    sidecar = json.loads(sidecar_text)
    assert sidecar["http_status"] == 401 and "bad API key" in sidecar["reason"]
    for text in (log.read_text(), sidecar_text):
        assert "wrong-espo-key-4711" not in text


def test_an_unknown_record_fails(espo: Site) -> None:
    espo.drop("no-such-note", "a.txt", b"orphan", target=NOTES)
    assert run_once_in_process(espo) == 1
    sidecar = _sidecar(espo, NOTES, "no-such-note", "a.txt")
    assert sidecar["step"] == "link" and sidecar["http_status"] == 404


# -- crashes -----------------------------------------------------------------------------------------------


def test_kill_9_during_link_then_restart_links_once(espo: Site, tmp_path: Path) -> None:
    # Hold the record write long enough to kill the daemon while it waits for the answer.
    espo.sandbox.add_fault("PUT", r"^/api/v1/Note/", action="delay", delay=3.0)
    data = os.urandom(50_000)
    espo.drop("note-1", "killed.jpg", data, target=NOTES)
    log = tmp_path / "daemon.log"
    process = hotfolder("run", "-c", str(espo.config_path), log=log)
    try:
        wait_for(lambda: any(j.state is State.LINK for j in espo.jobs()), what="job at link")
        wait_for(lambda: _requests(espo, "GET", "/api/v1/Note/note-1"), what="the link's read")
        time.sleep(0.5)  # the PUT is now at the vendor, held back
    finally:
        kill9(process)
    assert (espo.inbox / NOTES / "note-1" / "killed.jpg").exists()  # nothing lost
    wait_for(lambda: _requests(espo, "PUT", "/api/v1/Note/note-1"), timeout=10, what="the held PUT to land")
    assert len(_note_attachments(espo)) == 1  # the link happened; the journal does not know

    restarted = hotfolder("once", "-c", str(espo.config_path), log=log)
    assert restarted.wait(60) == 0, log.read_text()[-3000:]

    (attachment_id,) = _note_attachments(espo)
    assert _download(espo, attachment_id) == data
    assert len(_requests(espo, "PUT", "/api/v1/Note/note-1")) == 1  # the restart did not write again
    assert '"link_was_already_there": true' in log.read_text()
    assert (espo.done / NOTES / "note-1" / "killed.jpg").read_bytes() == data


# -- memory ------------------------------------------------------------------------------------------------

BIG = 100 * 1024 * 1024
RSS_LIMIT = 80 * 1024 * 1024


def _write_big(path: Path, size: int) -> str:
    """Write ``size`` random bytes a MiB at a time; return their SHA-256."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for _ in range(0, size, 1024 * 1024):
            block = os.urandom(min(1024 * 1024, size - handle.tell()))
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def peak_rss_until_exit(process: subprocess.Popen[bytes], interval: float = 0.02) -> int:
    """The process's peak RSS in bytes (VmHWM), polled until it exits.

    Not ``ru_maxrss``: Linux carries that across exec, so a child forked from a big parent (pytest)
    would report the parent's size. VmHWM belongs to the address space exec made, and only grows.
    """
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError, IndexError):
            pass  # exiting between poll() and the read
        time.sleep(interval)
    return peak


def _peak_rss_of_run(site: Site, log: Path) -> tuple[int, int]:
    """Run ``hotfolder once`` to its end; (exit code, peak RSS in bytes of exactly that process)."""
    process = hotfolder("once", "-c", str(site.config_path), log=log)
    peak = peak_rss_until_exit(process)
    return process.wait(), peak


def test_a_100_mb_upload_keeps_memory_flat(espo: Site, tmp_path: Path) -> None:
    _configure(espo, chunk_threshold="1GB")  # inline: one JSON body of ~133 MB
    folder = espo.inbox / DOCS / "doc-1"
    temp = folder / ".big.pdf.partial"
    expected = _write_big(temp, BIG)
    os.replace(temp, folder / "big.pdf")
    log = tmp_path / "daemon.log"

    code, peak = _peak_rss_of_run(espo, log)

    assert code == 0, log.read_text()[-3000:]
    print(f"hotfolder once, 100 MiB inline upload: peak RSS {peak / 2**20:.1f} MiB")
    assert peak < RSS_LIMIT, f"peak RSS {peak / 2**20:.1f} MiB for a 100 MiB file"
    attachment_id = _document_file(espo)
    received = hashlib.sha256()
    with open(espo.sandbox.espocrm.attachment_path(attachment_id), "rb") as handle:
        while block := handle.read(1024 * 1024):
            received.update(block)
    assert received.hexdigest() == expected


# -- the simulator keeps to the documented API ---------------------------------------------------------------


@pytest.fixture
def espo_api(tmp_path: Path) -> Iterator[tuple[Sandbox, httpx.Client]]:
    sandbox = Sandbox(tmp_path / "simulator").start()
    sandbox.espocrm.add_record("Document", "doc-1")
    sandbox.espocrm.add_record("Note", "note-1")
    try:
        with httpx.Client(base_url=f"{sandbox.url}/api/v1", headers={"X-Api-Key": API_KEY}) as client:
            yield sandbox, client
    finally:
        sandbox.stop()


def _post_attachment(client: httpx.Client, raw: str) -> httpx.Response:
    return client.post("/Attachment", content=raw.encode(), headers={"Content-Type": "application/json"})


NOTE_META = '"name": "a.txt", "type": "text/plain", "role": "Attachment", "parentType": "Note", "field": "attachments"'


@pytest.mark.parametrize(
    ("members", "status", "reason"),
    [
        (NOTE_META, 400, "No file contents."),
        (NOTE_META + ', "file": "no comma here"', 400, "Bad file contents."),
        (NOTE_META + ', "file": "data:text/plain;base64,QQ=A"', 400, "Could not decode file contents."),
        (NOTE_META.replace('"Attachment"', '"Avatar"') + ', "file": "data:,QQ=="', 403, "Role not allowed."),
        (NOTE_META.replace('"attachments"', '"nope"') + ', "file": "data:,QQ=="', 403, "Field 'nope' does not exist."),
        ('"name": "x.exe", "role": "Attachment", "relatedType": "Document", "field": "file", "file": "data:,QQ=="',
         403, "Not allowed file type."),
    ],
)
def test_attachment_create_refusals(
    espo_api: tuple[Sandbox, httpx.Client], members: str, status: int, reason: str
) -> None:
    _, client = espo_api
    response = _post_attachment(client, "{" + members + "}")
    assert (response.status_code, response.headers.get("X-Status-Reason")) == (status, reason)
    assert response.content == b""


def test_attachment_create_streams_escaped_json_and_enforces_the_size_limit(
    espo_api: tuple[Sandbox, httpx.Client],
) -> None:
    sandbox, client = espo_api
    data = os.urandom(3000) + b"\xff\xff\xfe"  # base64 with '/' in it, which PHP clients escape as "\/"
    encoded = base64.b64encode(data).decode().replace("/", "\\/")
    raw = '{"file": "data:application\\/octet-stream;base64,' + encoded + '", ' + NOTE_META + "}"
    response = _post_attachment(client, raw)
    assert response.status_code == 200
    assert sandbox.espocrm.attachment_bytes(response.json()["id"]) == data

    sandbox.espocrm.max_upload_size = 1000
    response = _post_attachment(client, raw)
    assert (response.status_code, response.headers["X-Status-Reason"]) == (
        403, "Attachment size exceeds attachmentUploadMaxSize.")


def test_chunks_append_without_offsets(espo_api: tuple[Sandbox, httpx.Client]) -> None:
    sandbox, client = espo_api
    meta = json.loads("{" + NOTE_META + "}") | {"isBeingUploaded": True, "size": 6}
    attachment_id = client.post("/Attachment", json=meta).json()["id"]
    chunk = "data:text/plain;base64," + base64.b64encode(b"abc").decode()
    assert client.post(f"/Attachment/chunk/{attachment_id}", content=chunk).json() is True
    assert client.post(f"/Attachment/chunk/{attachment_id}", content=chunk).json() is True  # a "retry"
    assert sandbox.espocrm.attachment_bytes(attachment_id) == b"abcabc"  # appended twice: corrupt, complete
    late = client.post(f"/Attachment/chunk/{attachment_id}", content=chunk)
    assert (late.status_code, late.headers["X-Status-Reason"]) == (403, "Attachment is not being-uploaded.")


def test_hmac_signs_the_path_after_api_v1_without_the_query(espo_api: tuple[Sandbox, httpx.Client]) -> None:
    sandbox, _ = espo_api

    def get(signed: str, url: str) -> int:
        digest = hmac.new(HMAC_SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
        token = base64.b64encode(f"{HMAC_KEY}:{digest}".encode()).decode()
        return httpx.get(f"{sandbox.url}/api/v1{url}", headers={"X-Hmac-Authorization": token}).status_code

    assert get("GET /Note/note-1", "/Note/note-1?select=id") == 200
    assert get("GET /Note/note-1?select=id", "/Note/note-1?select=id") == 401
    assert get("GET Note/note-1", "/Note/note-1") == 401
    assert httpx.get(f"{sandbox.url}/api/v1/Note/note-1", headers={"X-Api-Key": HMAC_KEY}).status_code == 401


def test_attachment_multiple_put_replaces_the_whole_set(espo_api: tuple[Sandbox, httpx.Client]) -> None:
    sandbox, client = espo_api
    first, second = (sandbox.espocrm.add_attachment("Note", "attachments", b"%d" % n) for n in range(2))
    assert client.put("/Note/note-1", json={"attachmentsIds": [first]}).status_code == 200
    assert client.put("/Note/note-1", json={"attachmentsIds": [second]}).status_code == 200
    assert client.get("/Note/note-1").json()["attachmentsIds"] == [second]  # the first was unlinked
    refused = client.put("/Note/note-1", json={"attachmentsIds": ["no-such-id"]})
    assert (refused.status_code, refused.headers["X-Status-Reason"]) == (400, "validationFailure")
