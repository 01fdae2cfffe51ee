"""Visibuild folder tickets through the runner: one ticket per folder, created once ticket.yaml is there
and every file is uploaded; the folder's files (and ticket.yaml) reach their outcome together."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from hotfolder.service import Daemon
from tests.harness import Site, hotfolder, kill9, run_once_in_process, wait_for
from tests.test_visibuild import vsite

__all__ = ["vsite"]


def _drop_folder(site: Site, folder: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        site.drop(f"proj-1/{folder}", name, data, target="visibuild")


def _write_manifest(site: Site, folder: str, fields: dict[str, object]) -> None:
    path = site.inbox / "visibuild" / "proj-1" / folder / "ticket.yaml"
    temp = path.with_name(".ticket.yaml.partial")
    temp.write_text(yaml.safe_dump(fields))
    os.replace(temp, path)


def test_a_folder_becomes_one_ticket_once_ticket_yaml_arrives(vsite: Site) -> None:
    files = {"hinge.jpg": os.urandom(40_000), "plan.pdf": b"%PDF-1.4 floor plan"}
    _drop_folder(vsite, "kitchen", files)
    daemon = Daemon(vsite.settings())
    daemon.start()
    try:
        # Both files upload, then wait: no ticket without ticket.yaml.
        wait_for(lambda: all(j.state.value == "link" and j.last_error for j in vsite.jobs()) and len(vsite.jobs()) == 2,
                 what="both files uploaded and waiting")
        assert vsite.sandbox.visibuild.tickets() == []
        assert all("waiting for ticket.yaml" in j.last_error["reason"] for j in vsite.jobs())
        _write_manifest(vsite, "kitchen", {"title": "Kitchen hinge broken", "priority": "high",
                                           "contact": {"name": "Jane Doe"}})
        done = vsite.done / "visibuild" / "proj-1" / "kitchen"
        wait_for(lambda: sorted(p.name for p in done.glob("*")) == ["hinge.jpg", "plan.pdf", "ticket.yaml"],
                 what="the folder in done/")
    finally:
        daemon.stop()
    (ticket,) = vsite.sandbox.visibuild.tickets()
    assert ticket["title"] == "Kitchen hinge broken" and ticket["priority"] == "high"
    assert ticket["projectId"] == "proj-1"
    assert sorted(vsite.sandbox.visibuild.blob_bytes(k) for k in ticket["attachmentKeys"]) == sorted(files.values())
    assert not (vsite.inbox / "visibuild" / "proj-1" / "kitchen" / "ticket.yaml").exists()


def test_a_refused_folder_fails_together_with_its_ticket_yaml(vsite: Site) -> None:
    _drop_folder(vsite, "bad", {"a.jpg": b"a", "b.jpg": b"b"})
    _write_manifest(vsite, "bad", {"title": "x", "projectId": "someone-else"})
    assert run_once_in_process(vsite) == 1
    failed = vsite.failed / "visibuild" / "proj-1" / "bad"
    assert sorted(p.name for p in failed.iterdir()) == ["a.jpg", "a.jpg.error.json", "b.jpg", "b.jpg.error.json",
                                                       "ticket.yaml"]
    for name in ("a.jpg", "b.jpg"):
        assert "ticket.yaml" in json.loads((failed / f"{name}.error.json").read_text())["reason"]
    assert vsite.sandbox.visibuild.tickets() == []


def test_kill_during_the_folder_ticket_create_leaves_one_ticket(vsite: Site, tmp_path: Path) -> None:
    vsite.sandbox.add_fault("POST", r"^/api/core/v1/tickets$", action="delay", delay=3.0)
    _drop_folder(vsite, "lobby", {"1.jpg": b"one", "2.jpg": b"two", "3.jpg": b"three"})
    _write_manifest(vsite, "lobby", {"title": "Lobby"})
    log = tmp_path / "daemon.log"
    process = hotfolder("run", "-c", str(vsite.config_path), log=log)
    try:
        wait_for(lambda: any(j.vendor.get("ticket_create_attempted") for j in vsite.jobs()), what="create sent")
        time.sleep(0.5)
    finally:
        kill9(process)
    wait_for(lambda: len(vsite.sandbox.visibuild.tickets()) == 1, what="the held create to land")
    assert hotfolder("once", "-c", str(vsite.config_path), log=log).wait(60) == 0, log.read_text()[-3000:]
    (ticket,) = vsite.sandbox.visibuild.tickets()
    assert len(ticket["attachmentKeys"]) == 3
    done = vsite.done / "visibuild" / "proj-1" / "lobby"
    assert sorted(p.name for p in done.iterdir()) == ["1.jpg", "2.jpg", "3.jpg", "ticket.yaml"]
