"""A vendor outage over real HTTP: the target pauses after a few failures in a row, one request probes it
at growing intervals, its jobs resume when it answers, and the other targets are not slowed. Every file
ends done, attached exactly once. (bench/outage.py measures the issue's 15 s outage at default settings.)"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder import demo
from hotfolder.cli import main
from hotfolder.events import Event, TargetPaused, TargetResumed
from hotfolder.limits import CIRCUIT_FAILURES
from tests.harness import Site, simulated_site, wait_for, write_config

VENDOR_PATHS = r"^/api/v2/|^/s3/fulcrum"  # the Fulcrum target's API and its S3
RECORD, NOTE = "rec-1001", "note-1"


@pytest.fixture
def vendors(tmp_path: Path) -> Iterator[Site]:
    with simulated_site(tmp_path, lambda sandbox: demo.seed(sandbox, tmp_path / "seed-inbox")) as site:
        yield site


def configure(site: Site, names: tuple[str, ...], **overrides: Any) -> None:
    """The demo's targets ``names`` (only these), with the harness's folders and fast watch settings."""
    targets = demo.demo_targets(site.sandbox.url)
    write_config(site.root, site.sandbox.url, targets={name: targets[name] for name in names}, **overrides)


def _probe_times(first: float, longest: float, window: float) -> int:
    """How many probes fit in ``window`` when they go out after ``first``, then twice as long, up to ``longest``."""
    probes, at, interval = 0, first, first
    while at <= window:
        probes += 1
        interval = min(interval * 2, longest)
        at += interval
    return probes


def test_an_outage_pauses_the_target_probes_it_then_every_file_is_done_once(vendors: Site) -> None:
    from hotfolder.service import Daemon

    workers, backoff, longest, outage = 4, 0.1, 0.4, 2.5
    configure(vendors, ("fulcrum", "espocrm-notes"), workers=workers,
              retry={"attempts": 40, "backoff": "100ms", "max_backoff": "400ms"})
    seen: list[Event] = []
    daemon = Daemon(vendors.settings())
    daemon.events.subscribe(lambda event: seen.append(event) if isinstance(event, TargetPaused | TargetResumed)
                            else None)
    daemon.start()
    try:
        vendors.sandbox.add_fault("*", VENDOR_PATHS, status=503, count=100_000, body="maintenance")
        down_at = time.monotonic()
        files = {f"scan-{n}.pdf": b"%PDF-1.4 " + os.urandom(1500) for n in range(8)}
        for name, data in files.items():
            vendors.drop(RECORD, name, data, target="fulcrum")
        notes = {f"note-{n}.txt": os.urandom(800) for n in range(2)}
        for name, data in notes.items():
            vendors.drop(NOTE, name, data, target="espocrm-notes")
        wait_for(lambda: any(isinstance(e, TargetPaused) and e.cause == "outage" for e in seen), what="the pause")
        # The other target goes on during the outage.
        wait_for(lambda: all((vendors.done / "espocrm-notes" / NOTE / n).exists() for n in notes),
                 timeout=max(0.1, outage - (time.monotonic() - down_at)), what="the other target's files")
        status = io.StringIO()
        with contextlib.redirect_stdout(status):
            main(["status", "-c", str(vendors.config_path)])
        assert "target fulcrum is paused" in status.getvalue(), status.getvalue()
        assert "paused: fulcrum (outage)" in daemon.status_line()  # systemd's STATUS= line
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
        vendors.sandbox.clear_faults()
        wait_for(lambda: all((vendors.done / "fulcrum" / RECORD / n).exists() for n in files), timeout=30,
                 what="every Fulcrum file done")
        assert "paused" not in daemon.status_line()
    finally:
        daemon.stop()

    held = vendors.sandbox.fulcrum.record(RECORD)["form_values"].get(demo.FIELD) or []
    assert sorted(vendors.sandbox.fulcrum.attachment_bytes(i["attachment_id"]) for i in held) == sorted(files.values())
    assert not [p for p in vendors.failed.rglob("*") if p.is_file()]
    failures = [r for r in vendors.sandbox.requests() if r["status"] == 503]
    # The failures in a row that open it, requests already in flight then, and one probe per interval. Each
    # job retrying on its own would send several times as many (bench/outage.py: 60 against 6).
    bound = CIRCUIT_FAILURES + workers + _probe_times(backoff, longest, outage + 0.5)
    assert len(failures) <= bound, f"{len(failures)} requests during the outage (bound {bound})"
    paused = [e for e in seen if isinstance(e, TargetPaused)]
    assert paused and all(e.target == "fulcrum" and e.cause == "outage" for e in paused)
    assert "HTTP 503" in paused[0].reason
    assert [e.target for e in seen if isinstance(e, TargetResumed)] == ["fulcrum"]
