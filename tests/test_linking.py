"""Links waiting on one record share one read-modify-write, and each file is still linked once."""

from __future__ import annotations

import hashlib
import os

from tests import harness
from tests.harness import Site, run_once_in_process, write_config

site = harness.site  # the fixture: a simulator with records rec-1 and rec-2, and a site beside it


def _record_writes(site: Site) -> int:
    return sum(1 for r in site.sandbox.requests() if r["method"] == "PUT" and r["path"].startswith("/api/v2/records/"))


def test_a_batch_dropped_into_one_record_folder_is_linked_with_fewer_writes_each_file_once(site: Site) -> None:
    """A slow record read (a remote vendor) makes the workers queue on the record's lock; the one
    holding it links the waiting files too, so the record is written fewer times than there are files."""
    write_config(site.root, site.sandbox.url, workers=4)
    site.sandbox.add_fault("GET", r"^/api/v2/records/rec-1\.json$", action="delay", delay=0.3, count=100)
    files = {f"page-{n:02d}.pdf": os.urandom(2_000 + n) for n in range(12)}
    for name, data in files.items():
        site.drop("rec-1", name, data)

    assert run_once_in_process(site) == 0

    attached = site.attachments_on("rec-1")
    assert sorted(item["name"] for item in attached) == sorted(files)  # each once
    for item in attached:
        blob = site.sandbox.fulcrum.attachment_bytes(item["attachment_id"])
        assert hashlib.sha256(blob).digest() == hashlib.sha256(files[item["name"]]).digest()
    assert _record_writes(site) < len(files)
    assert sorted(p.name for p in (site.done / "fulcrum" / "rec-1").iterdir()) == sorted(files)
