"""Visibuild over real HTTP on 127.0.0.1: one ticket per file (or per folder), never two.

End-to-end tests run the daemon against the sandbox; the auth and group tests call the adapter
directly with hand-built StepContexts, still over real HTTP, because what they check (a token shared
by workers, renewed at the right moment, a link_group call) is the adapter's own behaviour.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hotfolder.errors import StepError
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.sandbox import Sandbox
from hotfolder.service import make_client
from hotfolder.transfer import FileIdentity, hash_file
from hotfolder.vendors.base import StepContext
from hotfolder.vendors.visibuild import ATTEMPTED, CONFIRMED_BY_422, Visibuild, render_title
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

CLIENT_ID = "hotfolder-test"
CLIENT_SECRET = "vb-secret-5d2a91e7"  # distinctive, so a leak into a log or sidecar is easy to spot
STATIC_TOKEN = "vb-static-token-90c4f1"
TICKETS = r"^/api/core/v1/tickets$"


def _target(url: str, **options: Any) -> dict[str, Any]:
    credentials = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return {
        "vendor": "visibuild", "url": url, "timeout": "10s", **credentials,
        "title_template": "Scan {stem} ({suffix})", "ticket": {"priority": "medium", "description": "by hotfolder"},
        **options,
    }


def _configure(site: Site, **options: Any) -> None:
    target = {key: value for key, value in _target(site.sandbox.url, **options).items() if value is not None}
    site.config_path = write_config(site.root, site.sandbox.url, targets={"visibuild": target})


def _seed(sandbox: Sandbox) -> None:
    sandbox.visibuild.clients = {CLIENT_ID: CLIENT_SECRET}
    sandbox.visibuild.static_tokens = {STATIC_TOKEN}




@pytest.fixture
def vsite(tmp_path: Path) -> Iterator[Site]:
    """An installation with a visibuild target (client credentials) and a simulator that knows the client."""
    with simulated_site(tmp_path, _seed) as site:
        _configure(site)
        yield site


def _drop(site: Site, record: str, name: str, data: bytes) -> None:
    site.drop(record, name, data, target="visibuild")


def _tickets_by_title(site: Site) -> dict[str, dict[str, Any]]:
    return {ticket["title"]: ticket for ticket in site.sandbox.visibuild.tickets()}


def _sidecar(site: Site, record: str, name: str) -> dict[str, Any]:
    return json.loads((site.failed / "visibuild" / record / f"{name}.error.json").read_text())


def _requests(site: Site, method: str, path: str) -> list[int]:
    return [r["status"] for r in site.sandbox.requests() if r["method"] == method and r["path"] == path]


# -- end to end ----------------------------------------------------------------------------------------


def test_client_credentials_one_ticket_per_file(vsite: Site) -> None:
    files = {"defect-photo.jpg": os.urandom(150_000), "floor plan.pdf": b"%PDF-1.4 " + os.urandom(2_000)}
    for name, data in files.items():
        _drop(vsite, "proj-1", name, data)

    assert run_once_in_process(vsite) == 0

    tickets = _tickets_by_title(vsite)
    assert sorted(tickets) == ["Scan defect-photo (.jpg)", "Scan floor plan (.pdf)"]
    for name, data in files.items():
        ticket = tickets[f"Scan {Path(name).stem} ({Path(name).suffix})"]
        assert ticket["projectId"] == "proj-1" and ticket["priority"] == "medium"
        (key,) = ticket["attachmentKeys"]
        assert vsite.sandbox.visibuild.blob_bytes(key) == data
        assert (vsite.done / "visibuild" / "proj-1" / name).read_bytes() == data
    assert vsite.sandbox.visibuild.attachment(tickets["Scan floor plan (.pdf)"]["attachmentKeys"][0])[
        "contentType"] == "application/pdf"
    assert vsite.sandbox.visibuild.tokens_issued == 1  # one token, shared by every worker and step
    assert not any(vsite.failed.rglob("*"))


def test_a_file_rewritten_after_its_ticket_was_made_gets_a_ticket_of_its_own_naming_the_stale_one(
    vsite: Site,
) -> None:
    """A ticket takes attachment keys only when it is made: the new bytes go on a new ticket, and
    the note beside the file in done/ names the ticket that still holds the earlier version."""
    first, second = os.urandom(10_000), os.urandom(12_000)
    _drop(vsite, "proj-1", "defect.jpg", first)
    path = vsite.inbox / "visibuild" / "proj-1" / "defect.jpg"
    vsite.sandbox.add_fault("POST", TICKETS, count=1, action="delay", delay=2.0)

    rewrite_once_sent(vsite, path, second, lambda: any(
        r["method"] == "PUT" and r["status"] == 200 for r in vsite.sandbox.requests()))

    tickets = vsite.sandbox.visibuild.tickets()
    assert len(tickets) == 2
    held = [vsite.sandbox.visibuild.blob_bytes(ticket["attachmentKeys"][0]) for ticket in tickets]
    assert sorted(held) == sorted([first, second])
    done = vsite.done / "visibuild" / "proj-1" / "defect.jpg"
    assert done.read_bytes() == second
    note = json.loads((done.parent / "defect.jpg.resent.json").read_text())
    stale_ticket = note["stale"][0]["ticket_id"]
    (stale,) = [t for t in tickets if t["id"] == stale_ticket]
    assert vsite.sandbox.visibuild.blob_bytes(stale["attachmentKeys"][0]) == first
    assert note["ids"]["stale_kept"] == [str(stale_ticket)] and str(stale_ticket) in note["note"]


def test_long_lived_token_is_used_as_is(vsite: Site) -> None:
    _configure(vsite, token=STATIC_TOKEN, client_id=None, client_secret=None)
    _drop(vsite, "proj-1", "note.txt", b"long-lived")
    assert run_once_in_process(vsite) == 0
    (ticket,) = vsite.sandbox.visibuild.tickets()
    assert vsite.sandbox.visibuild.blob_bytes(ticket["attachmentKeys"][0]) == b"long-lived"
    assert _requests(vsite, "POST", "/oauth/token") == []


def test_unknown_project_fails_with_the_vendors_reason(vsite: Site) -> None:
    _drop(vsite, "proj-404", "scan.pdf", b"orphan")
    assert run_once_in_process(vsite) == 1
    sidecar = _sidecar(vsite, "proj-404", "scan.pdf")
    assert sidecar["step"] == "link" and sidecar["http_status"] == 404
    assert "project not found" in sidecar["reason"]
    assert vsite.sandbox.visibuild.tickets() == []


def test_wrong_client_secret_fails_without_leaking_it(vsite: Site, tmp_path: Path) -> None:
    wrong = "vb-wrong-secret-31b7c0"
    _configure(vsite, client_secret=wrong)
    _drop(vsite, "proj-1", "scan.pdf", b"x")
    log = tmp_path / "daemon.log"
    assert hotfolder("once", "-c", str(vsite.config_path), log=log).wait(60) == 1
    sidecar = _sidecar(vsite, "proj-1", "scan.pdf")
    assert sidecar["step"] == "presign" and sidecar["http_status"] == 401
    assert "invalid_client" in sidecar["reason"]
    for text in (log.read_text(), json.dumps(sidecar)):
        assert wrong not in text and "X-Amz-Signature=" not in text


def test_kill_9_during_ticket_create_then_restart_makes_exactly_one_ticket(vsite: Site, tmp_path: Path) -> None:
    # Hold the ticket create so the daemon dies while it is in flight; the vendor still makes the ticket.
    vsite.sandbox.add_fault("POST", TICKETS, action="delay", delay=2.5)
    data = os.urandom(100_000)
    _drop(vsite, "proj-1", "killed.jpg", data)
    log = tmp_path / "daemon.log"
    process = hotfolder("run", "-c", str(vsite.config_path), log=log)
    try:
        wait_for(lambda: any(j.state is State.LINK for j in vsite.jobs()), what="job at link")
        wait_for(lambda: vsite.jobs()[0].vendor.get(ATTEMPTED), what="the attempt to be journaled")
        time.sleep(0.5)  # the POST is now held at the vendor
    finally:
        kill9(process)
    wait_for(lambda: vsite.sandbox.visibuild.tickets(), what="the held create to land")

    restarted = hotfolder("once", "-c", str(vsite.config_path), log=log)
    assert restarted.wait(60) == 0, log.read_text()[-3000:]

    (ticket,) = vsite.sandbox.visibuild.tickets()
    (key,) = ticket["attachmentKeys"]
    assert vsite.sandbox.visibuild.blob_bytes(key) == data
    assert (vsite.done / "visibuild" / "proj-1" / "killed.jpg").read_bytes() == data
    assert _requests(vsite, "POST", "/api/core/v1/tickets")[-1] == 422  # the restart met "already associated"
    (job,) = vsite.jobs()
    assert job.vendor["ticket_confirmed_by"] == CONFIRMED_BY_422
    text = log.read_text()
    assert CLIENT_SECRET not in text and "X-Amz-Signature=" not in text


# -- the adapter on its own: auth, link_group, title ------------------------------------------------------


def _adapter(site: Site) -> Visibuild:
    target = site.settings().targets["visibuild"]
    return Visibuild(target, make_client(target, workers=4))


def _ctx(path: Path, *, group: str | None = None, ids: dict[str, Any] | None = None) -> StepContext:
    digests = hash_file(path, ("md5",))
    return StepContext(
        job_id=1, target="visibuild", record="proj-1", group=group, name=path.name, path=path,
        identity=digests.identity, digests=digests, ids=dict(ids or {}),
    )


def _uploaded(adapter: Visibuild, folder: Path, name: str, data: bytes, group: str | None = None) -> StepContext:
    """A file taken through presign and upload, with the key in its ids as the journal would hold it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    ctx = _ctx(path, group=group)
    ids = dict(adapter.presign(ctx))
    adapter.upload(ctx)
    ctx.ids = ids
    return ctx


def test_token_is_renewed_before_it_expires(vsite: Site, tmp_path: Path) -> None:
    vsite.sandbox.visibuild.token_lifetime = 2
    adapter = _adapter(vsite)
    _uploaded(adapter, tmp_path / "f", "a.txt", b"first")
    time.sleep(2.0)
    _uploaded(adapter, tmp_path / "f", "b.txt", b"second")
    assert vsite.sandbox.visibuild.tokens_issued == 2
    assert 401 not in _requests(vsite, "POST", "/api/core/v1/attachments")  # renewed ahead, never refused


def test_a_401_renews_the_token_and_retries_once(vsite: Site, tmp_path: Path) -> None:
    adapter = _adapter(vsite)
    _uploaded(adapter, tmp_path / "f", "a.txt", b"first")
    vsite.sandbox.visibuild.revoke_tokens()  # rotated at the vendor: our cached token is now refused
    _uploaded(adapter, tmp_path / "f", "b.txt", b"second")
    assert _requests(vsite, "POST", "/api/core/v1/attachments") == [200, 401, 200]
    assert vsite.sandbox.visibuild.tokens_issued == 2

    vsite.sandbox.add_fault("POST", r"^/api/core/v1/attachments$", status=401, count=2)
    with pytest.raises(StepError) as refused:
        _uploaded(adapter, tmp_path / "f", "c.txt", b"third")
    assert refused.value.kind is OutcomeKind.PERMANENT and refused.value.outcome.status == 401
    assert vsite.sandbox.visibuild.tokens_issued == 3  # exactly one renewal for the two 401s


def test_workers_share_one_token(vsite: Site, tmp_path: Path) -> None:
    adapter = _adapter(vsite)
    errors: list[BaseException] = []

    def presign(number: int) -> None:
        try:
            folder = tmp_path / f"w{number}"
            folder.mkdir()
            (folder / "x.bin").write_bytes(b"x" * number)
            adapter.presign(_ctx(folder / "x.bin"))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=presign, args=(n + 1,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and vsite.sandbox.visibuild.tokens_issued == 1


def test_link_group_makes_one_ticket_and_never_a_second(vsite: Site, tmp_path: Path) -> None:
    adapter = _adapter(vsite)
    folder = tmp_path / "proj-1" / "door-7"
    members = [_uploaded(adapter, folder, f"p{n}.jpg", os.urandom(1000 + n), group="door-7") for n in range(3)]
    remembered: list[dict[str, Any]] = []
    members[0].remember = lambda ids: remembered.append(dict(ids))
    manifest = {"title": "Door 7 hinge", "priority": "high", "contact": {"name": "Jane"}, "due": dt.date(2024, 5, 1)}

    ids = adapter.link_group(members[0], members, manifest)

    (ticket,) = vsite.sandbox.visibuild.tickets()
    assert ids == {"ticket_id": ticket["id"]}
    assert ticket["attachmentKeys"] == [m.ids["key"] for m in members]
    assert (ticket["title"], ticket["priority"], ticket["description"]) == ("Door 7 hinge", "high", "by hotfolder")
    assert ticket["contact"] == {"name": "Jane"} and ticket["due"] == "2024-05-01"
    assert remembered and remembered[0][ATTEMPTED] is True

    # The same create after an unknown outcome: the vendor's 422 proves the first one landed.
    for member in members:
        member.ids = {**member.ids, **remembered[0]}
    again = adapter.link_group(members[1], members, manifest)
    assert again == {"ticket_id": None, "ticket_confirmed_by": CONFIRMED_BY_422}
    assert len(vsite.sandbox.visibuild.tickets()) == 1


def test_link_group_without_a_title_is_named_after_its_folder(vsite: Site, tmp_path: Path) -> None:
    adapter = _adapter(vsite)
    member = _uploaded(adapter, tmp_path / "proj-1" / "Unit 405", "a.jpg", b"a", group="Unit 405")
    adapter.link_group(member, [member], {})
    assert [t["title"] for t in vsite.sandbox.visibuild.tickets()] == ["Unit 405"]


def test_a_file_that_joined_after_a_landed_create_is_not_reported_linked(vsite: Site, tmp_path: Path) -> None:
    adapter = _adapter(vsite)
    folder = tmp_path / "proj-1" / "late"
    first = _uploaded(adapter, folder, "a.jpg", b"a", group="late")
    remembered: list[dict[str, Any]] = []
    first.remember = lambda ids: remembered.append(dict(ids))
    adapter.link_group(first, [first], {})  # landed, but (say) the answer was lost
    first.ids = {**first.ids, **remembered[0]}
    late = _uploaded(adapter, folder, "b.jpg", b"b", group="late")
    with pytest.raises(StepError) as refused:
        adapter.link_group(first, [first, late], {})
    assert refused.value.kind is OutcomeKind.PERMANENT and "without b.jpg" in refused.value.outcome.reason
    assert len(vsite.sandbox.visibuild.tickets()) == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"errors": [{"detail": "attachment key not found"}]}, "attachment key not found"),
        ({"errors": [{"message": "one"}, {"title": "two"}]}, "one; two"),
        ({"error": "invalid_client", "error_description": "bad secret"}, "invalid_client: bad secret"),
        ({"error": {"message": "nested"}}, "nested"),
        ({"message": "read-only token"}, "read-only token"),
    ],
)
def test_error_detail_shapes(vsite: Site, body: dict[str, Any], detail: str) -> None:
    response = httpx.Response(422, json=body)
    assert _adapter(vsite).api_error_detail(response) == detail


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("manifest sets projectId", "ticket.yaml: projectId"),
        ("key linked elsewhere", "attachment already associated"),
        ("key of another company", "attachment belongs to another company"),
        ("key never uploaded", "attachment key not found"),
    ],
)
def test_link_refusals_are_permanent_with_the_reason(vsite: Site, tmp_path: Path, case: str, words: str) -> None:
    adapter = _adapter(vsite)
    ctx = _uploaded(adapter, tmp_path / "proj-1", "a.jpg", b"a")
    manifest: dict[str, Any] = {}
    if case == "manifest sets projectId":
        manifest = {"projectId": "proj-2"}
    elif case == "key linked elsewhere":
        adapter.link(_ctx(ctx.path, ids=ctx.ids))  # linked once, by "someone else": this ctx never attempted
    elif case == "key of another company":
        ctx.ids = {"key": vsite.sandbox.visibuild.add_foreign_attachment()}
    else:
        fresh = _ctx(ctx.path)
        ctx.ids = dict(adapter.presign(fresh))  # presigned, never PUT
    with pytest.raises(StepError) as refused:
        adapter.link_group(ctx, [ctx], manifest) if manifest else adapter.link(ctx)
    assert refused.value.kind is OutcomeKind.PERMANENT
    assert words in refused.value.outcome.reason


def test_title_template() -> None:
    ctx = StepContext(
        job_id=1, target="visibuild", record="proj-1", group="door 7", name="defect photo.v2.jpg",
        path=Path("/nonexistent"), identity=FileIdentity(1, 1), digests=None, ids={},
    )
    assert render_title("{stem}", ctx) == "defect photo.v2"
    assert render_title("{name}|{suffix}|{target}|{record}|{group}", ctx) == (
        "defect photo.v2.jpg|.jpg|visibuild|proj-1|door 7")
    ctx.group = None
    assert render_title("[{group}] {{literal}} {stem}", ctx) == "[] {literal} defect photo.v2"
    assert render_title("{group}", ctx) == "defect photo.v2.jpg"  # never an empty title


# -- the simulator keeps S3's and the API's rules ---------------------------------------------------------


def test_simulator_enforces_signed_headers_size_md5_and_write_scope(vsite: Site) -> None:
    data = b"exactly these bytes"
    checksum = base64.b64encode(hashlib.md5(data).digest()).decode()
    with httpx.Client(base_url=vsite.sandbox.url) as client:
        auth = {"Authorization": f"Bearer {STATIC_TOKEN}"}
        body = {"filename": "a.txt", "contentType": "text/plain", "fileSize": len(data), "checksum": checksum}
        missing = client.post("/api/core/v1/attachments", json={**body, "checksum": None}, headers=auth)
        assert missing.status_code == 422 and "checksum" in missing.text

        def put(content: bytes, **headers: str) -> httpx.Response:
            upload = client.post("/api/core/v1/attachments", json=body, headers=auth).json()["data"]["upload"]
            return client.put(upload["url"], content=content, headers={**upload["headers"], **headers})

        assert put(data, **{"Content-Type": "application/pdf"}).status_code == 403
        assert put(data + b"!").status_code == 403  # the declared fileSize is signed as Content-Length
        assert put(b"Exactly these bytes").status_code == 400  # same length, other bytes: BadDigest
        assert put(data).status_code == 200

        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        read_only = client.post("/oauth/token", data=form).json()["access_token"]  # no scope asked
        refused = client.post("/api/core/v1/attachments", json=body, headers={"Authorization": f"Bearer {read_only}"})
        assert refused.status_code == 403
