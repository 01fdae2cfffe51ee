"""Fulcrum beyond record attachments, over real HTTP on 127.0.0.1: form-owned attachments, camera photos
and MBTiles layers, including kills at the steps that are not idempotent at the vendor."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.pipeline import State
from hotfolder.sandbox import Sandbox
from tests.harness import FIELD, TOKEN, Site, hotfolder, kill9, run_once_in_process, wait_for, write_config

FORM = "form-7"
RECORD = "rec-1"
PHOTO_FIELD = "9f1b"
TARGETS: dict[str, Any] = {
    "forms": {"vendor": "fulcrum", "token": "${FULCRUM_TOKEN}", "field": FIELD, "owner": "form"},
    "camera": {"vendor": "fulcrum", "token": "${FULCRUM_TOKEN}", "field": PHOTO_FIELD, "kind": "photo",
               "caption": "{stem} ({suffix}) at {target}/{record}"},
    "layers": {"vendor": "fulcrum-layers", "token": "${FULCRUM_TOKEN}"},
    "maps": {"vendor": "fulcrum-layers", "token": "${FULCRUM_TOKEN}", "name_template": "Map: {name}"},
    "nameless": {"vendor": "fulcrum-layers", "token": "${FULCRUM_TOKEN}", "name_template": "{group}"},
}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    sandbox = Sandbox(tmp_path / "simulator", fulcrum_tokens=(TOKEN,))
    sandbox.start()
    try:
        sandbox.fulcrum.add_record(RECORD, form_values={"title": "Gate", PHOTO_FIELD: []})
        sandbox.fulcrum.add_form(FORM)
        root = tmp_path / "site"
        root.mkdir()
        targets = {name: {**spec, "url": sandbox.url, "timeout": "10s"} for name, spec in TARGETS.items()}
        yield Site(root, sandbox, write_config(root, sandbox.url, targets=targets))
    finally:
        sandbox.stop()


def drop(site: Site, relpath: str, data: bytes) -> Path:
    """Put a file in the inbox the way a scanner does: written aside, then renamed into place."""
    path = site.inbox / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.partial"
    temp.write_bytes(data)
    os.replace(temp, path)
    return path


def sidecar(site: Site, relpath: str) -> dict[str, Any]:
    failed = site.failed / relpath
    return dict(json.loads(failed.with_name(failed.name + ".error.json").read_text()))


def photos_on_record(site: Site) -> list[dict[str, Any]]:
    return list(site.sandbox.fulcrum.record(RECORD)["form_values"].get(PHOTO_FIELD) or [])


# -- happy paths --------------------------------------------------------------------------------------------


def test_form_attachment_photo_and_layers_arrive_with_their_bytes(site: Site) -> None:
    files = {
        f"forms/{FORM}/spec sheet.pdf": os.urandom(150_000),
        f"camera/{RECORD}/gate.jpg": b"\xff\xd8\xff" + os.urandom(1_300_000),  # more than one 1 MiB read
        "layers/topo.mbtiles": b"SQLite format 3\x00" + os.urandom(90_000),
        "maps/flood zone.mbtiles": b"SQLite format 3\x00" + os.urandom(40_000),
        # Another target writing the same record at the same time: neither append may be lost.
        f"fulcrum/{RECORD}/report.pdf": os.urandom(20_000),
        f"camera/{RECORD}/fence.jpg": b"\xff\xd8\xff" + os.urandom(30_000),
    }
    for relpath, data in files.items():
        drop(site, relpath, data)

    assert run_once_in_process(site) == 0

    for relpath, data in files.items():
        assert (site.done / relpath).read_bytes() == data
    assert not any(site.failed.rglob("*"))
    fulcrum = site.sandbox.fulcrum

    (attachment,) = [a for a in fulcrum.attachments() if a["name"] == "spec sheet.pdf"]
    assert attachment["owners"] == [{"type": "form", "id": FORM}] and attachment["finalized"]
    assert fulcrum.attachment_bytes(attachment["id"]) == files[f"forms/{FORM}/spec sheet.pdf"]
    form_values = fulcrum.record(RECORD)["form_values"]
    assert form_values["title"] == "Gate" and [item["name"] for item in form_values[FIELD]] == ["report.pdf"]

    photos = {item["caption"]: item["photo_id"] for item in photos_on_record(site)}
    assert sorted(photos) == [f"fence (.jpg) at camera/{RECORD}", f"gate (.jpg) at camera/{RECORD}"]
    for stem, photo_id in ((caption.split()[0], key) for caption, key in photos.items()):
        assert fulcrum.photo_bytes(photo_id) == files[f"camera/{RECORD}/{stem}.jpg"]

    layers = {layer["name"]: layer for layer in fulcrum.layers()}
    assert sorted(layers) == ["Map: flood zone.mbtiles", "topo"]
    assert all(layer["type"] == "mbtiles" for layer in layers.values())
    assert fulcrum.layer_bytes(layers["topo"]["id"]) == files["layers/topo.mbtiles"]
    assert fulcrum.layer_bytes(layers["Map: flood zone.mbtiles"]["id"]) == files["maps/flood zone.mbtiles"]


# -- refusals -----------------------------------------------------------------------------------------------


def test_refused_layers_and_photos_fail_with_the_vendors_words(site: Site) -> None:
    refusal = json.dumps({"layer": {"errors": {"name": ["has already been taken"]}}})
    site.sandbox.add_fault("POST", r"^/api/v2/layers\.json$", status=422, body=refusal)
    site.sandbox.add_fault("POST", r"^/api/v2/photos\.json$", status=422,
                           body=json.dumps({"photo": {"errors": {"file": ["is not an image"]}}}))
    drop(site, "layers/taken.mbtiles", b"tiles")
    drop(site, "layers/scan.tif", b"not tiles")
    drop(site, f"camera/{RECORD}/doc.jpg", b"not a jpeg")
    assert run_once_in_process(site) == 1
    # Alone, so that the fault above cannot have been spent on it.
    drop(site, "nameless/blank.mbtiles", b"tiles")  # the template renders "": the vendor wants a name
    assert run_once_in_process(site) == 1

    taken = sidecar(site, "layers/taken.mbtiles")
    assert taken["step"] == "link" and taken["http_status"] == 422
    assert "name has already been taken" in taken["reason"]
    assert "name can't be blank" in sidecar(site, "nameless/blank.mbtiles")["reason"]
    wrong = sidecar(site, "layers/scan.tif")
    assert wrong["step"] == "presign" and ".mbtiles" in wrong["reason"]
    photo = sidecar(site, f"camera/{RECORD}/doc.jpg")
    assert photo["step"] == "upload" and "file is not an image" in photo["reason"]
    assert (site.failed / "layers/scan.tif").read_bytes() == b"not tiles"
    assert site.sandbox.fulcrum.layers() == [] and photos_on_record(site) == []


# -- kills at the steps the vendor cannot make idempotent -------------------------------------------------


def _kill_while_held(site: Site, log: Path, stage: State, method: str, path_regex: str) -> None:
    """Start the daemon, kill -9 it while the vendor holds its request at ``stage``, and let that land."""
    site.sandbox.add_fault(method, path_regex, action="delay", delay=2.5)
    process = hotfolder("run", "-c", str(site.config_path), log=log)
    try:
        wait_for(lambda: any(j.state is stage for j in site.jobs()), what=f"a job at {stage}")
        wait_for(lambda: not site.sandbox.faults.pending(), what="the request to reach the vendor")
    finally:
        kill9(process)
    # The held request completes at the vendor after the daemon is gone: done there, unknown here.
    wait_for(lambda: any(r["method"] == method and r["status"] in (200, 201) and re.search(path_regex, r["path"])
                         for r in site.sandbox.requests()), what="the held request to land")


def _restart(site: Site, log: Path) -> str:
    restarted = hotfolder("once", "-c", str(site.config_path), log=log)
    assert restarted.wait(60) == 0, log.read_text()[-3000:]
    return log.read_text()


def test_kill_during_layer_create_leaves_exactly_one_layer(site: Site, tmp_path: Path) -> None:
    data = b"SQLite format 3\x00" + os.urandom(60_000)
    drop(site, "layers/killed.mbtiles", data)
    log = tmp_path / "daemon.log"
    _kill_while_held(site, log, State.LINK, "POST", r"^/api/v2/layers\.json$")
    assert len(site.sandbox.fulcrum.layers()) == 1

    text = _restart(site, log)
    (layer,) = site.sandbox.fulcrum.layers()
    assert layer["name"] == "killed" and site.sandbox.fulcrum.layer_bytes(layer["id"]) == data
    assert (site.done / "layers/killed.mbtiles").read_bytes() == data
    assert '"layer_adopted": true' in text and TOKEN not in text


def test_kill_during_photo_upload_then_link_keeps_one_photo_once(site: Site, tmp_path: Path) -> None:
    data = b"\xff\xd8\xff" + os.urandom(80_000)
    drop(site, f"camera/{RECORD}/killed.jpg", data)
    log = tmp_path / "daemon.log"
    # First the photo POST lands after the kill: the restart must adopt it, not send a second photo.
    _kill_while_held(site, log, State.UPLOAD, "POST", r"^/api/v2/photos\.json$")
    assert len(site.sandbox.fulcrum.photos()) == 1
    site.sandbox.add_fault("PUT", r"^/api/v2/records/", action="delay", delay=2.5)
    process = hotfolder("run", "-c", str(site.config_path), log=log)
    try:
        wait_for(lambda: any(j.state is State.LINK for j in site.jobs()), what="the job at link")
        wait_for(lambda: not site.sandbox.faults.pending(), what="the record write to reach the vendor")
    finally:
        kill9(process)
    wait_for(lambda: photos_on_record(site), what="the held record write to land")

    text = _restart(site, log)
    (photo,) = site.sandbox.fulcrum.photos()
    assert photos_on_record(site) == [{"photo_id": photo["access_key"], "caption": "killed (.jpg) at camera/rec-1"}]
    assert site.sandbox.fulcrum.photo_bytes(photo["access_key"]) == data
    assert (site.done / f"camera/{RECORD}/killed.jpg").read_bytes() == data
    assert '"photo_adopted": true' in text and '"link_was_already_there": true' in text


# -- the rule for finding the layer an earlier attempt created (pure) -----------------------------------


@pytest.mark.parametrize(("layer", "ours"), [
    ({"id": "a", "name": "other", "type": "xyz", "key": "k-1"}, True),  # a vendor that echoes the key: proof
    ({"id": "a", "name": "other", "type": "mbtiles", "source": "https://t/k-1/{z}"}, True),
    ({"id": "a", "name": "topo", "type": "mbtiles", "file_size": 10, "created_at": "2030-01-01T00:00:00Z"}, True),
    ({"id": "a", "name": "topo", "type": "mbtiles", "file_size": 0}, True),  # size not known yet
    ({"id": "a", "name": "topo", "type": "mbtiles", "file_size": 11}, False),
    ({"id": "a", "name": "Topo", "type": "mbtiles", "file_size": 10}, False),
    ({"id": "a", "name": "topo", "type": "xyz", "file_size": 10}, False),
    ({"id": "a", "name": "topo", "type": "mbtiles", "file_size": 10, "created_at": "2014-10-22T17:07:53Z"}, False),
])
def test_layer_adoption_rule(layer: dict[str, Any], ours: bool) -> None:
    from hotfolder.vendors.fulcrum_layers import _looks_like_ours, _made_from

    since = 1_893_456_060.0  # our first attempt, 2030-01-01T00:01:00Z: a minute after the 2030 layer above
    assert (_made_from(layer, "k-1") or _looks_like_ours(layer, "topo", 10, since)) is ours
