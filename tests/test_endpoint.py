"""The HTTP endpoint over real HTTP: /metrics after a known run, /healthz and /readyz, and its guard.

The daemon runs in this process (its endpoint on a free port of 127.0.0.1), the vendor is the
project's sandbox, and every request is a real httpx request; the page itself is tested in a real
browser in tests/test_status_page.py.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hotfolder.config import http_token_file
from hotfolder.service import Daemon
from tests.harness import Site, daemon_with_endpoint, enable_http, site, wait_for

__all__ = ["site"]  # the fixture, imported for pytest

@contextmanager
def running(site: Site) -> Iterator[tuple[Daemon, httpx.Client]]:
    with daemon_with_endpoint(site) as (daemon, base), httpx.Client(base_url=base, timeout=10) as client:
        yield daemon, client


def all_finished(site: Site, count: int) -> bool:
    jobs = site.jobs()
    return len(jobs) == count and all(job.finished for job in jobs)


def scrape(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {samples.get(name)}"
    return found[0]


def test_metrics_after_a_known_run(site: Site) -> None:
    """3 files done, 1 twin of one of them, 1 failing after its retries: the counts a scrape shows."""
    enable_http(site)
    # Every write to rec-2 answers 503: its one file is retried until retry.attempts (6) run out.
    site.sandbox.add_fault("PUT", r"^/api/v2/records/rec-2\.json$", status=503, count=1000, body="down")
    sent = {name: f"%PDF-1.4 {name} ".encode() + os.urandom(3000 + i * 1000)
            for i, name in enumerate(("alpha.pdf", "bravo.pdf", "charlie.pdf"))}
    for name, data in sent.items():
        site.drop("rec-1", name, data)
    with running(site) as (_daemon, client):
        wait_for(lambda: all_finished(site, 3), what="the three files")
        site.drop("rec-1", "alpha-again.pdf", sent["alpha.pdf"])  # the same bytes for the same record
        failing = b"%PDF-1.4 echo " + os.urandom(2000)
        site.drop("rec-2", "echo.pdf", failing)
        (site.inbox / "loose.pdf").write_bytes(b"%PDF-1.4 no target, no record")  # refused at the door
        wait_for(lambda: all_finished(site, 6), what="the twin, the failing file and the loose one")
        samples = scrape(client)

    files = {labels["outcome"]: v for labels, v in samples["hotfolder_files_total"] if labels["target"] == "fulcrum"}
    assert files == {"done": 3, "duplicate": 1, "failed": 1}
    # The loose file's "target" is its own name: a label says only that it had none.
    assert value(samples, "hotfolder_files_total", target="(unknown)", outcome="failed") == 1
    steps = {labels["step"]: v for labels, v in samples["hotfolder_step_duration_seconds_count"]
             if labels["target"] == "fulcrum"}
    # Every file is hashed; the twin is never uploaded; the failing one tried its link 6 times.
    assert steps["hash"] == 5 and steps["presign"] == 5 and steps["upload"] == 4 and steps["finalize"] == 4
    assert steps["link"] == 3 + 6 and steps["to_done"] == 4 and steps["to_failed"] == 1
    assert value(samples, "hotfolder_retries_total", target="fulcrum", step="link", reason="http_503") == 5
    assert value(samples, "hotfolder_vendor_responses_total", target="fulcrum", code="503") == 6
    uploaded = sum(len(data) for data in sent.values()) + len(failing)  # the twin's bytes never went out
    assert value(samples, "hotfolder_upload_bytes_total", target="fulcrum") == uploaded
    assert value(samples, "hotfolder_jobs", state="done") == 4 and value(samples, "hotfolder_jobs", state="failed") == 2
    assert value(samples, "hotfolder_jobs", state="hash") == 0
    assert value(samples, "hotfolder_oldest_waiting_seconds") == 0
    assert value(samples, "hotfolder_target_paused", target="fulcrum") == 0
    assert value(samples, "hotfolder_last_success_timestamp_seconds", target="fulcrum") > 1.7e9
    assert value(samples, "hotfolder_config_last_reload_successful") == 1
    assert next(labels for labels, _ in samples["hotfolder_build_info"])["version"]
    assert value(samples, "hotfolder_not_ready_files", reason="incomplete") == 0
    # Labels are bounded: targets, steps, outcomes, codes; never a file name or a record id.
    for name, rows in samples.items():
        for labels, _ in rows:
            for label in labels.values():
                assert not re.search(r"rec-\d|\.pdf|alpha|echo|loose", label), (name, labels)


def test_health_turns_503_while_a_worker_hangs_and_recovers(site: Site) -> None:
    enable_http(site, stuck_after="1s")
    with running(site) as (_daemon, client):
        assert client.get("/healthz").json() == {"status": "ok", "reasons": []}
        assert client.get("/readyz").status_code == 200
        # The vendor holds the presign request open for 4 s: the worker waits in it without progress.
        site.sandbox.add_fault("POST", r"^/api/v2/attachments$", action="delay", delay=4)
        site.drop("rec-1", "slow.pdf", b"%PDF-1.4 slow")
        hung = wait_for(lambda: (r := client.get("/healthz")).status_code == 503 and r, timeout=10,
                        what="/healthz to fail")
        body = hung.json()
        assert body["status"] == "fail"
        assert any("step presign" in reason and "without progress" in reason for reason in body["reasons"]), body
        assert "slow.pdf" not in hung.text  # a health answer names jobs, never files
        wait_for(lambda: client.get("/healthz").status_code == 200, timeout=15, what="/healthz to recover")
        wait_for(lambda: all_finished(site, 1), what="the file, once the vendor answered")
    assert (site.done / "fulcrum" / "rec-1" / "slow.pdf").exists()


def test_guard_over_plain_http(site: Site) -> None:
    enable_http(site)
    with running(site) as (daemon, client):
        token_path = http_token_file(daemon.settings)
        assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
        token = token_path.read_text().strip()
        port = daemon.endpoint.port if daemon.endpoint else 0
        origin = {"Origin": f"http://127.0.0.1:{port}"}
        # No token: the page shows only the login form, the API refuses.
        page = client.get("/")
        assert page.status_code == 401 and "token" in page.text and "Targets" not in page.text
        assert client.get("/api/status").status_code == 401
        # Loopback: metrics and health need none.
        assert client.get("/metrics").status_code == 200 and client.get("/readyz").status_code == 200
        # A Host this endpoint is not (DNS rebinding) is refused, token or not.
        evil = client.get("/api/status", headers={"Host": "evil.example", "Authorization": f"Bearer {token}"})
        assert evil.status_code == 421
        assert client.get("/metrics", headers={"Host": f"evil.example:{port}"}).status_code == 421
        # The wrong token, then the right one from another origin, then from this one.
        assert client.post("/login", data={"token": "nope"}, headers=origin).status_code == 403
        assert client.post("/login", data={"token": token},
                           headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/login", data={"token": token}).status_code == 403  # no Origin at all
        login = client.post("/login", data={"token": token}, headers=origin)
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
        page = client.get("/")
        assert page.status_code == 200 and "Targets" in page.text
        assert token not in page.text and token not in client.get("/api/status").text
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' covers it
        assert "default-src 'none'" in page.headers["content-security-policy"]
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        # An action needs this page's CSRF token and Origin; with both it works.
        assert client.post("/action/pause", data={"target": "fulcrum"}, headers=origin).status_code == 403
        assert client.post("/action/pause", data={"target": "fulcrum", "csrf": csrf[1]},
                           headers={"Origin": "http://localhost:1"}).status_code == 403
        assert client.get("/api/status").json()["targets"]["fulcrum"]["paused"] is None
        done = client.post("/action/pause", data={"target": "fulcrum", "csrf": csrf[1]}, headers=origin)
        assert done.status_code == 303
        assert client.get("/api/status").json()["targets"]["fulcrum"]["paused"]["kind"] == "by hand"
        # Scripts use the token as a Bearer header.
        bearer = httpx.get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200


def test_beyond_loopback_every_path_needs_the_token(site: Site, tmp_path: Path) -> None:
    """Listening on every address: /metrics and /healthz need the token too."""
    enable_http(site, listen="0.0.0.0:0", allowed_hosts=["scans.example.lan"])
    with running(site) as (daemon, client):
        port = daemon.endpoint.port if daemon.endpoint else 0
        token = http_token_file(daemon.settings).read_text().strip()
        host = {"Host": f"scans.example.lan:{port}"}
        assert client.get("/metrics", headers=host).status_code == 401
        assert client.get("/healthz", headers=host).status_code == 401
        assert client.get("/metrics", headers={**host, "Authorization": f"Bearer {token}"}).status_code == 200
        # 127.0.0.1 is not a name this endpoint was given: only the allowed names are.
        assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 421


def log_in(client: httpx.Client, daemon: Daemon) -> str:
    """Trade the token for the cookie as the page's form does; the page's CSRF token."""
    assert daemon.endpoint is not None
    origin = {"Origin": f"http://127.0.0.1:{daemon.endpoint.port}"}
    token = http_token_file(daemon.settings).read_text().strip()
    assert client.post("/login", data={"token": token}, headers=origin).status_code == 303
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/").text)
    assert found is not None
    return found[1]


def press(client: httpx.Client, daemon: Daemon, action: str, csrf: str, **fields: str) -> httpx.Response:
    assert daemon.endpoint is not None
    return client.post(f"/action/{action}", data={"csrf": csrf, **fields},
                       headers={"Origin": f"http://127.0.0.1:{daemon.endpoint.port}"})


def test_retry_all_of_a_target_and_rescan_now(site: Site) -> None:
    """Two files refused by the vendor go back together and end in done/; a new file the watcher would not
    see for an hour (polling every hour) is found by Rescan now."""
    enable_http(site)
    config = yaml.safe_load(site.config_path.read_text())
    config["watch"].update({"method": "polling", "poll_interval": "1h", "rescan": "1h"})
    site.config_path.write_text(yaml.safe_dump(config))
    site.sandbox.add_fault("PUT", r"^/api/v2/records/rec-2\.json$", status=422, count=2, body='{"error": "locked"}')
    for name in ("a.pdf", "b.pdf"):
        site.drop("rec-2", name, b"%PDF-1.4 " + name.encode() + os.urandom(100))
    with running(site) as (daemon, client):
        wait_for(lambda: all_finished(site, 2), what="the two failures")
        assert sorted(p.name for p in (site.failed / "fulcrum" / "rec-2").iterdir()) == [
            "a.pdf", "a.pdf.error.json", "b.pdf", "b.pdf.error.json"]
        csrf = log_in(client, daemon)
        assert press(client, daemon, "retry-target", csrf, target="fulcrum").headers["location"] == "/?note=retried"
        assert list((site.failed / "fulcrum" / "rec-2").iterdir()) == []  # sidecars gone with them
        assert sorted(p.name for p in (site.inbox / "fulcrum" / "rec-2").iterdir()) == ["a.pdf", "b.pdf"]
        # Polling every hour: a new file is found only by the rescan the button starts (and so are the
        # retried ones, which a poll every few seconds would find by itself).
        site.drop("rec-1", "new.pdf", b"%PDF-1.4 new")
        time.sleep(1.5)
        assert not any(job.name == "new.pdf" for job in site.jobs())
        assert press(client, daemon, "rescan", csrf).headers["location"] == "/?note=rescan"
        wait_for(lambda: all_finished(site, 5), what="the retried files and the one the rescan found")
        assert sorted(p.name for p in (site.done / "fulcrum" / "rec-2").iterdir()) == ["a.pdf", "b.pdf"]
        assert len(site.attachments_on("rec-2")) == 2
        assert (site.done / "fulcrum" / "rec-1" / "new.pdf").exists()
        # A Retry of a job whose file is no longer in failed/ says so, and moves nothing.
        first = min(job.id for job in site.jobs())
        assert press(client, daemon, "retry", csrf, job=str(first)).headers["location"] == "/?note=retry-gone"
        assert press(client, daemon, "retry-target", csrf, target="../done").headers["location"] == (
            "/?note=retry-gone")
