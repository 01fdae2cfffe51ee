"""Faults from the vendors, over real HTTP on 127.0.0.1, for every vendor the demo configures.

What the issue asks of the daemon, one test each: bursts of 500/502/503; 429 and 420 with and
without Retry-After; a connection reset in the middle of an upload body; answers slower than the
client's timeout; presigned URLs that expire before use; the vendor down (connection refused) and
then back; an exhausted retry budget. Every test checks what a user would: the file in done/ (or
failed/ with its sidecar), each file attached exactly once, with its bytes, at the vendor.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hotfolder import demo
from hotfolder.limits import DEFAULT_RATE_LIMIT_PAUSE
from hotfolder.sandbox import Sandbox
from tests.harness import Site, run_once_in_process, simulated_site, wait_for, write_config

# -- the vendors, as the demo configures them -----------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One demo target: where its files go, which requests each step makes, and what the vendor holds."""

    target: str
    record: str  # the folder below inbox/<target>/ ("" for layers: no record level)
    name: str
    steps: dict[str, tuple[str, str]]  # step → (method, path regex) of the request that does its work
    api: tuple[str, ...]  # path prefixes of this target's API (not its S3): what a rate limit pauses
    held: Callable[[Sandbox], list[bytes]]  # the bytes of every file linked to the record, once each


def _fulcrum_held(record: str, field: str, id_key: str) -> Callable[[Sandbox], list[bytes]]:
    def held(sandbox: Sandbox) -> list[bytes]:
        items = sandbox.fulcrum.record(record)["form_values"].get(field) or []
        if id_key == "photo_id":
            return [sandbox.fulcrum.photo_bytes(item["photo_id"]) for item in items]
        return [sandbox.fulcrum.attachment_bytes(item["attachment_id"]) for item in items]

    return held


def _layers_held(sandbox: Sandbox) -> list[bytes]:
    return [sandbox.fulcrum.layer_bytes(layer["id"]) for layer in sandbox.fulcrum.layers()]


def _visibuild_held(sandbox: Sandbox) -> list[bytes]:
    return [sandbox.visibuild.blob_bytes(key) for ticket in sandbox.visibuild.tickets()
            for key in ticket["attachmentKeys"]]


def _saferme_held(sandbox: Sandbox) -> list[bytes]:
    return [sandbox.saferme.blob_bytes(item) for item in sandbox.saferme.field_value("7001", demo.REPORT_FIELD)]


def _notes_held(sandbox: Sandbox) -> list[bytes]:
    ids = sandbox.espocrm.record("Note", "note-1")["attachmentsIds"]
    return [sandbox.espocrm.attachment_bytes(attachment_id) for attachment_id in ids]


# Record-specific link paths: a fault meant for one target must not be taken by another's request.
SPECS: dict[str, Spec] = {
    spec.target: spec
    for spec in (
        Spec("fulcrum", "rec-1001", "scan.pdf", {
            "presign": ("POST", r"^/api/v2/attachments$"),
            "upload": ("PUT", r"^/s3/fulcrum-attachments/"),
            "finalize": ("POST", r"^/api/v2/attachments/finalize$"),
            "link": ("PUT", r"^/api/v2/records/rec-1001\.json$"),
        }, ("/api/v2/attachments", "/api/v2/records/rec-1001"),
            _fulcrum_held("rec-1001", demo.FIELD, "attachment_id")),
        Spec("fulcrum-camera", "rec-1002", "site.jpg", {
            "upload": ("POST", r"^/api/v2/photos\.json$"),
            "link": ("PUT", r"^/api/v2/records/rec-1002\.json$"),
        }, ("/api/v2/photos", "/api/v2/records/rec-1002"), _fulcrum_held("rec-1002", demo.PHOTO_FIELD, "photo_id")),
        Spec("fulcrum-layers", "", "topo.mbtiles", {
            "presign": ("GET", r"^/api/v2/file/upload_url\.json$"),
            "upload": ("PUT", r"^/s3/fulcrum-files/"),
            "link": ("POST", r"^/api/v2/layers\.json$"),
        }, ("/api/v2/file/", "/api/v2/layers"), _layers_held),
        Spec("visibuild", "proj-1", "defect.jpg", {
            "presign": ("POST", r"^/api/core/v1/attachments$"),
            "upload": ("PUT", r"^/s3/visibuild-uploads/"),
            "link": ("POST", r"^/api/core/v1/tickets$"),
            "auth": ("POST", r"^/oauth/token$"),  # during presign: the first call fetches the access token
        }, ("/oauth/token", "/api/core/v1/"), _visibuild_held),
        Spec("saferme", "7001", "hazard.png", {
            "presign": ("GET", r"^/api/v4/file_attachments/upload_authorization$"),
            "upload": ("POST", r"^/s3/saferme-uploads/?$"),
            "finalize": ("POST", r"^/api/v4/file_attachments$"),
            "link": ("PATCH", r"^/api/v4/reports/7001$"),
        }, ("/api/v4/",), _saferme_held),
        Spec("espocrm-notes", "note-1", "notes.txt", {
            "upload": ("POST", r"^/api/v1/Attachment$"),
            "link": ("PUT", r"^/api/v1/Note/note-1$"),
        }, ("/api/v1/",), _notes_held),
    )
}
ONE_PER_VENDOR = ("fulcrum", "fulcrum-layers", "visibuild", "saferme", "espocrm-notes")
PRESIGNED_PUT = ("fulcrum", "fulcrum-layers", "visibuild")


@pytest.fixture
def vendors(tmp_path: Path) -> Iterator[Site]:
    """The simulator seeded as for the demo, and a site configured (by each test) with demo targets.

    demo.seed also makes inbox folders and a sample file: they go to a scratch folder, not the site."""
    with simulated_site(tmp_path, lambda sandbox: demo.seed(sandbox, tmp_path / "seed-inbox")) as site:
        yield site


def _configure(site: Site, targets: tuple[str, ...], *, timeout: str | None = None, **overrides: Any) -> None:
    """The demo's targets (only these), with the harness's folders and fast watch settings."""
    write_config(site.root, site.sandbox.url, **overrides)
    config = yaml.safe_load(site.config_path.read_text())
    chosen = {name: options for name, options in demo.demo_targets(site.sandbox.url).items() if name in targets}
    if "saferme" in chosen:  # SaferMe's processing poll waits 2 s by default; a test need not
        chosen["saferme"] = {**chosen["saferme"], "poll_interval": "100ms"}
    if timeout is not None:
        chosen = {name: {**options, "timeout": timeout} for name, options in chosen.items()}
    config["targets"] = chosen
    site.config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _drop_one_each(site: Site, targets: tuple[str, ...], size: int = 2_000) -> dict[str, bytes]:
    """One file per target, with bytes no other file has (so a mix-up or a duplicate shows)."""
    dropped = {}
    for target in targets:
        spec = SPECS[target]
        data = f"{target}:".encode() + os.urandom(size)
        site.drop(spec.record, spec.name, data, target=target)
        dropped[target] = data
    return dropped


def _done_path(site: Site, target: str) -> Path:
    spec = SPECS[target]
    return site.done / target / spec.record / spec.name


def _assert_each_done_once(site: Site, dropped: dict[str, bytes]) -> None:
    """The user's check: in done/ with its bytes, nothing in failed/, and at the vendor exactly once."""
    for target, data in dropped.items():
        assert _done_path(site, target).read_bytes() == data, target
        held = SPECS[target].held(site.sandbox)
        assert held == [data], f"{target}: the vendor holds {len(held)} file(s), expected exactly this one"
    assert not [p for p in site.failed.rglob("*") if p.is_file()]


def _requests(site: Site, method: str, pattern: str) -> list[dict[str, Any]]:
    regex = re.compile(pattern)
    return [r for r in site.sandbox.requests() if r["method"] == method and regex.search(r["path"])]


# -- bursts of 500/502/503 ------------------------------------------------------------------------------


def test_bursts_of_5xx_on_every_step_end_done_attached_once(vendors: Site) -> None:
    targets = tuple(SPECS)
    _configure(vendors, targets, retry={"attempts": 20, "backoff": "20ms", "max_backoff": "200ms"})
    for target in targets:
        for method, path in SPECS[target].steps.values():
            for status in (500, 502, 503):
                vendors.sandbox.add_fault(method, path, status=status, body="try again later")
    dropped = _drop_one_each(vendors, targets)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    assert vendors.sandbox.faults.pending() == [], "every burst was met and outlasted"
    for target in targets:
        for step, (method, path) in SPECS[target].steps.items():
            statuses = [r["status"] for r in _requests(vendors, method, path)]
            assert statuses[:3] == [500, 502, 503], f"{target} {step}: {statuses}"
            assert statuses[3] < 300, f"{target} {step}: {statuses}"


def test_retry_after_on_a_5xx_is_honoured(vendors: Site) -> None:
    """A 503 with Retry-After: 1 (an API call, and S3's SlowDown on an upload): the same request is not
    sent again for at least that long, even though the configured backoff is far shorter."""
    targets = ONE_PER_VENDOR
    _configure(vendors, targets, retry={"attempts": 6, "backoff": "20ms", "max_backoff": "5s"})
    slowed = [next(iter(SPECS[target].steps.values())) for target in targets]
    slowed += [SPECS[target].steps["upload"] for target in PRESIGNED_PUT]
    for method, path in slowed:
        vendors.sandbox.add_fault(method, path, status=503, headers={"Retry-After": "1"},
                                  body="<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>")
    dropped = _drop_one_each(vendors, targets)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    for method, path in slowed:
        first, second = _requests(vendors, method, path)[:2]
        assert first["status"] == 503 and second["at"] - first["at"] >= 0.95, (method, path)


# -- rate limits: 429 and 420, with and without Retry-After --------------------------------------------


@pytest.mark.parametrize("retry_after", ["2", None], ids=["retry-after", "no-retry-after"])
@pytest.mark.parametrize("status", [429, 420])
def test_rate_limit_pauses_the_whole_target_then_done(vendors: Site, status: int, retry_after: str | None) -> None:
    """The limit lands on a file's link; the target's other file must not call the API during the pause.

    One worker, so no request is in flight when the limit lands: every request the target's API sees
    after it was started after it. Other targets go on meanwhile.
    """
    targets = ONE_PER_VENDOR
    _configure(vendors, targets, workers=1, retry={"attempts": 8, "backoff": "50ms", "max_backoff": "1s"})
    headers = {"Retry-After": retry_after} if retry_after else {}
    for target in targets:
        method, path = SPECS[target].steps["link"]
        vendors.sandbox.add_fault(method, path, status=status, headers=headers, body='{"error": "slow down"}')
    dropped: dict[str, list[bytes]] = {}
    for target in targets:
        spec = SPECS[target]
        stem, suffix = os.path.splitext(spec.name)
        for number in (1, 2):
            data = f"{target} {number}:".encode() + os.urandom(500)
            vendors.drop(spec.record, f"{stem}-{number}{suffix}", data, target=target)
            dropped.setdefault(target, []).append(data)

    assert run_once_in_process(vendors) == 0

    pause = float(retry_after) if retry_after else DEFAULT_RATE_LIMIT_PAUSE
    log = vendors.sandbox.requests()
    first_limit_at = min(r["at"] for r in log if r["status"] == status)
    others_meanwhile = False
    for target in targets:
        spec = SPECS[target]
        assert sorted(spec.held(vendors.sandbox)) == sorted(dropped[target]), target
        api = [r for r in log if r["path"].startswith(spec.api)]
        (limited,) = [r for r in api if r["status"] == status]
        after = [r["at"] - limited["at"] for r in api if r["at"] > limited["at"]]
        assert after, f"{target}: its jobs went on after the pause"
        # The sandbox logs just before answering, so a request after the pause is at least `pause` later.
        assert min(after) >= pause - 0.05, f"{target}: an API request {min(after):.2f}s into a {pause}s pause"
        if limited["at"] == first_limit_at:
            others = tuple(prefix for other in targets if other != target for prefix in SPECS[other].api)
            others_meanwhile = any(
                limited["at"] < r["at"] < limited["at"] + pause for r in log if r["path"].startswith(others)
            )
    assert others_meanwhile, "a rate limit pauses its own target, not the whole daemon"
    assert not [p for p in vendors.failed.rglob("*") if p.is_file()]


# -- a connection reset in the middle of an upload body -------------------------------------------------


def test_reset_mid_upload_body_is_retried_bytes_intact_once(vendors: Site) -> None:
    """S3 PUT (Fulcrum, layers, Visibuild), S3 POST form (SaferMe), base64 JSON (EspoCRM), multipart
    photo POST (Fulcrum camera): the server reads 100 KB of the body, then resets the connection."""
    targets = tuple(SPECS)
    _configure(vendors, targets)
    for target in targets:
        method, path = SPECS[target].steps["upload"]
        vendors.sandbox.add_fault(method, path, action="reset", after_bytes=100_000)
    dropped = _drop_one_each(vendors, targets, size=400_000)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    for target in targets:
        method, path = SPECS[target].steps["upload"]
        statuses = [r["status"] for r in _requests(vendors, method, path)]
        assert statuses[0] == 0 and statuses[-1] < 300, f"{target}: {statuses}"  # 0: the reset
    # The half-sent photo never became a photo: the retry sent it whole, once.
    assert len(vendors.sandbox.fulcrum.photos()) == 1


def test_reset_mid_chunk_of_a_chunked_espocrm_upload_starts_a_fresh_attachment(vendors: Site) -> None:
    """EspoCRM appends chunks without offsets, so a chunk cut off mid-body must not be sent again onto
    the same attachment: the next attempt starts a new one, and only that one is linked."""
    _configure(vendors, ("espocrm-notes",))
    config = yaml.safe_load(vendors.config_path.read_text())
    config["targets"]["espocrm-notes"].update({"chunk_threshold": "100KB", "chunk_size": "64KB"})
    vendors.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    chunk = r"^/api/v1/Attachment/chunk/"
    vendors.sandbox.add_fault("POST", chunk, action="delay", delay=0.0)  # the first chunk goes through
    vendors.sandbox.add_fault("POST", chunk, action="reset", after_bytes=30_000)  # the second is cut off
    dropped = _drop_one_each(vendors, ("espocrm-notes",), size=300_000)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    assert 0 in [r["status"] for r in _requests(vendors, "POST", chunk)]
    (job,) = vendors.jobs()
    linked = vendors.sandbox.espocrm.record("Note", "note-1")["attachmentsIds"]
    assert job.vendor["abandoned_attachment_ids"] and linked[0] not in job.vendor["abandoned_attachment_ids"]


# -- answers slower than the client's timeout ------------------------------------------------------------


def test_answers_slower_than_the_timeout_are_retried_and_a_landed_link_not_repeated(vendors: Site) -> None:
    """``timeout: 1s``; the vendor does the work at once but answers after 1.6 s. Each link write lands
    while the daemon has stopped waiting: the retry must find it there and not link again."""
    targets = tuple(SPECS)
    _configure(vendors, targets, timeout="1s", retry={"attempts": 8, "backoff": "100ms", "max_backoff": "1s"})
    for target in targets:
        method, path = SPECS[target].steps["link"]
        vendors.sandbox.add_fault(method, path, action="late", delay=1.6)
    dropped = _drop_one_each(vendors, targets)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    assert len(vendors.sandbox.fulcrum.layers()) == 1
    assert len(vendors.sandbox.visibuild.tickets()) == 1
    for job in vendors.jobs():
        assert job.attempts >= 1, f"{job.target}: the timeout was met and retried"
    # A late request is logged when its answer is finally sent, which may be after the daemon is done.
    wait_for(lambda: all(len(_requests(vendors, *SPECS[t].steps["link"])) >= (2 if t == "visibuild" else 1)
                         for t in targets), what="the late answers to be sent")
    for target in targets:
        if target == "visibuild":
            continue  # the create is sent again on purpose: the vendor's 422 proves the first one landed
        method, path = SPECS[target].steps["link"]
        assert len(_requests(vendors, method, path)) == 1, f"{target}: the landed link was written again"
    # The late 201 is logged when it is finally answered, after the retry's 422: compare as a set.
    creates = [r["status"] for r in _requests(vendors, *SPECS["visibuild"].steps["link"])]
    assert sorted(creates) == [201, 422], creates


def test_answers_slower_than_the_timeout_before_the_link_leave_no_duplicate(vendors: Site) -> None:
    """The same, on every step before the link: presigns and creates that landed unanswered (orphans
    at the vendor at worst), uploads that landed (a photo POST must be adopted, not sent again)."""
    targets = tuple(SPECS)
    _configure(vendors, targets, timeout="1s", retry={"attempts": 12, "backoff": "100ms", "max_backoff": "1s"})
    for target in targets:
        for step, (method, path) in SPECS[target].steps.items():
            if step != "link":
                vendors.sandbox.add_fault(method, path, action="late", delay=1.6)
    dropped = _drop_one_each(vendors, targets)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    assert vendors.sandbox.faults.pending() == []
    (photo,) = vendors.sandbox.fulcrum.photos()
    assert photo["file_size"] == len(dropped["fulcrum-camera"])
    photo_posts = SPECS["fulcrum-camera"].steps["upload"]
    # Logged when its late answer is sent, which may be after the daemon has adopted the photo.
    wait_for(lambda: len(_requests(vendors, *photo_posts)) >= 1, what="the late photo answer to be sent")
    assert len(_requests(vendors, *photo_posts)) == 1, "the landed photo was adopted"
    for job in vendors.jobs():
        assert job.attempts >= 1, f"{job.target}: the timeout was met and retried"


# -- presigned URLs that expire before use ---------------------------------------------------------------


def test_expired_presigned_urls_and_post_policies_are_presigned_again(vendors: Site) -> None:
    targets = (*PRESIGNED_PUT, "saferme")
    _configure(vendors, targets)
    # Two seconds, not one: a signature's time is whole seconds, so a one-second URL signed late in
    # its second may expire before even a prompt upload reaches S3, and the counts below would vary.
    vendors.sandbox.presign_expires = 2
    for target in targets:
        # Held before S3 looks at it, past the URL's (or the POST policy's) life: 403.
        method, path = SPECS[target].steps["upload"]
        vendors.sandbox.add_fault(method, path, action="delay", delay=2.6)
    dropped = _drop_one_each(vendors, targets)

    assert run_once_in_process(vendors) == 0

    _assert_each_done_once(vendors, dropped)
    for target in targets:
        spec = SPECS[target]
        uploads = [r["status"] for r in _requests(vendors, *spec.steps["upload"])]
        assert uploads[0] == 403 and uploads[-1] < 300 and len(uploads) == 2, f"{target}: {uploads}"
        presigns = [r["status"] for r in _requests(vendors, *spec.steps["presign"])]
        assert presigns == [200, 200], f"{target}: presigned once more after the refusal: {presigns}"


# -- the vendor down for a while, then back ---------------------------------------------------------------


def _most_attempts(window: float, backoff: float, max_backoff: float) -> int:
    """The most tries that fit in ``window`` seconds when every wait is as short as the jitter allows
    (half the exponential value, pipeline.backoff_delay), counting the try at the window's start."""
    tries, elapsed = 1, 0.0
    while True:
        wait = 0.5 * min(backoff * 2.0 ** (tries - 1), max_backoff)
        if elapsed + wait > window:
            return tries
        elapsed += wait
        tries += 1


def test_vendor_down_then_back_on_the_same_port_every_file_done_by_itself(vendors: Site) -> None:
    """Connection refused for 4 s (the issue's "minutes", scaled with small backoff settings), while a
    running daemon holds queued files for every vendor; then the simulator comes back on its port."""
    from hotfolder.service import Daemon

    targets = tuple(SPECS)
    backoff, max_backoff, outage = 0.2, 1.0, 4.0
    _configure(vendors, targets, retry={"attempts": 40, "backoff": f"{int(backoff * 1000)}ms",
                                        "max_backoff": f"{int(max_backoff * 1000)}ms"})
    port = vendors.sandbox.port
    vendors.sandbox.stop()
    daemon = Daemon(vendors.settings())
    daemon.start()
    try:
        dropped_at = time.monotonic()
        dropped = _drop_one_each(vendors, targets)
        wait_for(lambda: len(vendors.jobs()) == len(targets) and all(j.attempts >= 1 for j in vendors.jobs()),
                 what="every file to meet the refused connection")
        time.sleep(outage)
        vendors.sandbox.start()
        assert vendors.sandbox.port == port
        back_at = time.monotonic()
        wait_for(lambda: all(_done_path(vendors, t).exists() for t in targets), timeout=30, what="all done")
    finally:
        daemon.stop()

    _assert_each_done_once(vendors, dropped)
    # A job can only meet the refusal between its file's arrival and the simulator's return (plus a
    # margin for a try that had just started): at most as many tries as the backoff lets fit in there.
    window = back_at - dropped_at + 0.5
    bound = _most_attempts(window, backoff, max_backoff)
    for job in vendors.jobs():
        assert 1 <= job.attempts <= bound, f"{job.target}: {job.attempts} tries in {window:.1f}s (bound {bound})"


# -- an exhausted retry budget ---------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["first call", "upload"])
def test_exhausted_budget_ends_in_failed_with_the_last_reason(vendors: Site, where: str) -> None:
    """``retry.attempts: 3`` and a vendor (or its S3) that answers 503 for good: three tries, then failed/
    with a sidecar that names the step, the status and the vendor's last words."""
    targets = ONE_PER_VENDOR
    _configure(vendors, targets, retry={"attempts": 3, "backoff": "20ms", "max_backoff": "100ms"})
    chosen = {
        target: next(iter(SPECS[target].steps.items())) if where == "first call"
        else ("upload", SPECS[target].steps["upload"])
        for target in targets
    }
    for _step, (method, path) in chosen.values():
        vendors.sandbox.add_fault(method, path, status=503, count=100, body="maintenance window")
    dropped = _drop_one_each(vendors, targets)

    assert run_once_in_process(vendors) == 1

    for target, data in dropped.items():
        spec = SPECS[target]
        step, (method, path) = chosen[target]
        failed = vendors.failed / target / spec.record / spec.name
        assert failed.read_bytes() == data
        assert not _done_path(vendors, target).exists()
        sidecar = json.loads(failed.with_name(spec.name + ".error.json").read_text())
        assert sidecar["attempts"] == 3, sidecar
        assert sidecar["step"] == step and sidecar["http_status"] == 503, sidecar
        assert "gave up after 3 attempts" in sidecar["reason"] and "503" in sidecar["reason"], sidecar
        assert "maintenance window" in sidecar["reason"], sidecar
        assert [r["status"] for r in _requests(vendors, method, path)] == [503, 503, 503], target
        assert spec.held(vendors.sandbox) == []
