"""Fulcrum end to end over real HTTP on 127.0.0.1: dropped files reach the record exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from hotfolder.pipeline import State
from tests.harness import FIELD, TOKEN, Site, hotfolder, kill9, run_once_in_process, site, wait_for

__all__ = ["site"]  # the fixture, used by name


def _record_holds_exactly(site: Site, record: str, files: dict[str, bytes]) -> None:
    """The user's check: each file is attached once, and the vendor's bytes are the file's bytes."""
    attached = site.attachments_on(record)
    names = sorted(item["name"] for item in attached)
    assert names == sorted(files), f"record {record} holds {names}"
    for item in attached:
        blob = site.sandbox.fulcrum.attachment_bytes(item["attachment_id"])
        assert hashlib.sha256(blob).digest() == hashlib.sha256(files[item["name"]]).digest()


def test_dropped_files_end_in_done_attached_once(site: Site) -> None:
    dropped = {
        "rec-1": {"scan-0041.pdf": os.urandom(300_000), "photo.jpg": os.urandom(5_000)},
        "rec-2": {"notes.txt": b"hello from the field\n", "big.bin": os.urandom(3 * 1024 * 1024 + 17)},
    }
    for record, files in dropped.items():
        for name, data in files.items():
            site.drop(record, name, data)

    assert run_once_in_process(site) == 0

    for record, files in dropped.items():
        _record_holds_exactly(site, record, files)
        for name, data in files.items():
            assert (site.done / "fulcrum" / record / name).read_bytes() == data
    assert list((site.inbox / "fulcrum").rglob("*.*")) == []
    assert not any(site.failed.rglob("*"))
    attachments = site.sandbox.fulcrum.attachments()
    assert all(a["finalized"] for a in attachments if a["uploaded"])


def test_existing_attachments_are_kept_and_a_taken_done_name_is_not_overwritten(site: Site) -> None:
    site.sandbox.fulcrum.add_record("rec-9", form_values={FIELD: [], "title": "Fence"})
    site.drop("rec-9", "a.pdf", b"first")
    assert run_once_in_process(site) == 0
    site.drop("rec-9", "a.pdf", b"second, different bytes")  # same name, new content
    assert run_once_in_process(site) == 0

    assert sorted(p.read_bytes() for p in (site.done / "fulcrum" / "rec-9").iterdir()) == [
        b"first", b"second, different bytes"]
    record = site.sandbox.fulcrum.record("rec-9")
    assert record["form_values"]["title"] == "Fence"  # the rest of the record survived the whole-record PUT
    assert len(record["form_values"][FIELD]) == 2


def test_burst_of_500s_is_retried_then_succeeds(site: Site) -> None:
    site.sandbox.add_fault("POST", r"^/api/v2/attachments$", status=500, count=3)
    site.sandbox.add_fault("PUT", r"^/s3/", status=503, count=2, body="<Error><Code>SlowDown</Code></Error>")
    site.drop("rec-1", "scan.pdf", b"%PDF-1.4 retried")
    assert run_once_in_process(site) == 0
    _record_holds_exactly(site, "rec-1", {"scan.pdf": b"%PDF-1.4 retried"})
    presigns = [r for r in site.sandbox.requests() if r["method"] == "POST" and r["path"] == "/api/v2/attachments"]
    assert [r["status"] for r in presigns] == [500, 500, 500, 200]


def test_expired_presigned_url_is_presigned_again(site: Site) -> None:
    # The sandbox signs whole seconds: 2 s (not 1) so that only the held PUT can miss its window.
    site.sandbox.presign_expires = 2
    # The first PUT is held back past the URL's lifetime, so S3 answers 403 "Request has expired".
    site.sandbox.add_fault("PUT", r"^/s3/", action="delay", delay=2.6)
    site.drop("rec-1", "late.pdf", b"uploaded on the second URL")
    assert run_once_in_process(site) == 0
    _record_holds_exactly(site, "rec-1", {"late.pdf": b"uploaded on the second URL"})
    puts = [r["status"] for r in site.sandbox.requests() if r["method"] == "PUT" and r["path"].startswith("/s3/")]
    assert puts == [403, 200]


def test_validation_refusal_ends_in_failed_with_sidecar(site: Site) -> None:
    body = json.dumps({"record": {"errors": {FIELD: ["is not an attachment field"]}}})
    site.sandbox.add_fault("PUT", r"^/api/v2/records/", status=422, body=body, count=1)
    site.drop("rec-1", "refused.pdf", b"will be refused")
    assert run_once_in_process(site) == 1

    failed_file = site.failed / "fulcrum" / "rec-1" / "refused.pdf"
    assert failed_file.read_bytes() == b"will be refused"
    sidecar = json.loads((failed_file.parent / "refused.pdf.error.json").read_text())
    assert sidecar["step"] == "link" and sidecar["http_status"] == 422
    assert "is not an attachment field" in sidecar["reason"]
    assert sidecar["job_id"] and sidecar["attempts"] == 0
    assert site.attachments_on("rec-1") == []


def test_unknown_record_fails_with_the_vendors_reason(site: Site) -> None:
    site.drop("no-such-record", "scan.pdf", b"orphan")
    assert run_once_in_process(site) == 1
    sidecar = json.loads((site.failed / "fulcrum" / "no-such-record" / "scan.pdf.error.json").read_text())
    assert sidecar["http_status"] in (404, 422)


def test_bad_token_fails_permanently_without_leaking_it(site: Site, tmp_path: Path) -> None:
    config = site.config_path.read_text().replace("${FULCRUM_TOKEN}", "wrong-token-secret-123")
    site.config_path.write_text(config)
    site.drop("rec-1", "scan.pdf", b"x")
    log = tmp_path / "daemon.log"
    process = hotfolder("once", "-c", str(site.config_path), log=log)
    assert process.wait(60) == 1
    sidecar = (site.failed / "fulcrum" / "rec-1" / "scan.pdf.error.json").read_text()
    assert "401" in sidecar
    for text in (log.read_text(), sidecar):
        assert "wrong-token-secret-123" not in text and "X-Amz-Signature" not in text


def test_a_growing_file_is_not_picked_up_early(site: Site) -> None:
    from hotfolder.service import Daemon

    daemon = Daemon(site.settings())
    daemon.start()
    try:
        folder = site.inbox / "fulcrum" / "rec-1"
        folder.mkdir(parents=True, exist_ok=True)
        chunks = [os.urandom(20_000) for _ in range(8)]
        with open(folder / "slow-scan.pdf", "wb") as handle:
            for chunk in chunks:  # a scanner writing over ~1.2 s, pausing less than `settle`
                handle.write(chunk)
                handle.flush()
                time.sleep(0.15)
        wait_for(lambda: (site.done / "fulcrum" / "rec-1" / "slow-scan.pdf").exists(), what="done")
    finally:
        daemon.stop()
    _record_holds_exactly(site, "rec-1", {"slow-scan.pdf": b"".join(chunks)})
    assert len(site.jobs()) == 1


@pytest.mark.parametrize("stage", ["upload", "link"])
def test_kill_9_then_restart_completes_without_duplicates(site: Site, tmp_path: Path, stage: str) -> None:
    # Hold the vendor's answer long enough to kill the daemon while that step is in flight.
    if stage == "upload":
        site.sandbox.add_fault("PUT", r"^/s3/", action="delay", delay=3.0)
    else:
        site.sandbox.add_fault("PUT", r"^/api/v2/records/", action="delay", delay=3.0)
    data = os.urandom(200_000)
    site.drop("rec-1", "killed.pdf", data)
    log = tmp_path / "daemon.log"
    process = hotfolder("run", "-c", str(site.config_path), log=log)
    try:
        wait_for(lambda: any(j.state is State(stage) for j in site.jobs()), what=f"job at {stage}")
        time.sleep(0.7)  # the request is now at the vendor, waiting for its answer
    finally:
        kill9(process)
    assert (site.inbox / "fulcrum" / "rec-1" / "killed.pdf").exists()  # nothing lost
    if stage == "link":
        # Let the held record write land: the link happened at the vendor, the journal does not know.
        wait_for(lambda: any(r["method"] == "PUT" and r["path"].startswith("/api/v2/records/")
                             for r in site.sandbox.requests()), what="the held link to land")
        assert len(site.attachments_on("rec-1")) == 1

    restarted = hotfolder("once", "-c", str(site.config_path), log=log)
    assert restarted.wait(60) == 0, log.read_text()[-3000:]
    _record_holds_exactly(site, "rec-1", {"killed.pdf": data})
    assert (site.done / "fulcrum" / "rec-1" / "killed.pdf").read_bytes() == data
    text = log.read_text()
    assert TOKEN not in text
    if stage == "link":  # the restart checked the record and did not write it again
        assert '"link_was_already_there": true' in text
