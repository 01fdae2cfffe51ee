"""Alerts by webhook and email, end to end: the daemon against the sandbox, a real HTTP receiver and a
real SMTP server (STARTTLS on a self-signed certificate, with a login) on 127.0.0.1.

What a user would check: failed files arrive batched in one message per digest interval on both
channels, each with its reason; the webhook's signature verifies with the shared secret; an alert made
while the receivers are down arrives once they are back, also across a ``kill -9`` of the daemon, and
the restart after it is reported; a paused target, its recovery and a file that stays unfinished are
told; no secret is in any message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hotfolder.alerts.outbox import Outbox, outbox_path
from hotfolder.config import load_settings
from hotfolder.service import Daemon
from tests import harness
from tests.alerting import SMTP_PASSWORD, SMTP_USER, WEBHOOK_SECRET, SmtpReceiver, WebhookReceiver
from tests.harness import TOKEN, Site, env_for_daemon, kill9, wait_for, write_config

site = harness.site  # the fixture: a simulator with records rec-1 and rec-2, and a site beside it

ENVIRON = {"FULCRUM_TOKEN": TOKEN, "HOOK_SECRET": WEBHOOK_SECRET, "SMTP_PASSWORD": SMTP_PASSWORD}
SECRETS = (TOKEN, WEBHOOK_SECRET, SMTP_PASSWORD)


def notify(webhook: WebhookReceiver | None = None, smtp: SmtpReceiver | None = None, **overrides: Any) -> dict:
    section: dict[str, Any] = {
        "name": "scan-test", "digest_interval": "2s", "alert_after": "1s",
        "retry_backoff": "200ms", "retry_max_backoff": "1s", **overrides,
    }
    if webhook is not None:
        section["webhooks"] = [{"url": webhook.url, "name": "ops", "secret": "${HOOK_SECRET}",
                                "headers": {"X-Team": "ops"}, "timeout": "2s"}]
    if smtp is not None:
        section["email"] = {
            "host": "127.0.0.1", "port": smtp.port, "security": "starttls", "username": SMTP_USER,
            "password": "${SMTP_PASSWORD}", "from": "hotfolder@example.test", "to": ["ops@example.test"],
            "ca_file": str(smtp.cert_file), "timeout": "2s",
        }
    return section


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(tmp_path)
    yield receiver
    receiver.stop()


def running(site: Site, **overrides: Any) -> Daemon:
    write_config(site.root, site.sandbox.url, **overrides)
    daemon = Daemon(load_settings(site.config_path, environ=ENVIRON))
    daemon.start()
    return daemon


def fail_at_link(site: Site, count: int) -> None:
    """The vendor refuses the next links with a message that quotes the token (no alert may repeat it)."""
    body = json.dumps({"errors": [f"field refused for API token {TOKEN}"]})
    site.sandbox.add_fault("PUT", r"^/api/v2/records/", status=422, body=body, count=count)


def verify_signature(request: Any) -> None:
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Hotfolder-Signature"], expected)


def assert_no_secret(webhook: WebhookReceiver | None, smtp: SmtpReceiver | None) -> None:
    texts = []
    if webhook is not None:
        texts += [r.body.decode() + json.dumps(r.headers) for r in webhook.requests]
    if smtp is not None:
        texts += [raw.decode(errors="replace") for raw in smtp.mailbox.raw]
    assert texts
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_failed_files_arrive_batched_signed_on_both_channels_without_secrets(
    site: Site, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    webhook.start(), smtp.start()
    fail_at_link(site, 2)
    # 3 s: the three failures, a second or so apart on a busy machine, fall in the first digest's gathering time.
    daemon = running(site, notify=notify(webhook, smtp, digest_interval="3s"))
    try:
        site.drop("rec-1", "first.pdf", b"%PDF-1.4 one")
        site.drop("rec-2", "second.pdf", b"%PDF-1.4 two")
        site.drop("no-such-record", "third.pdf", b"%PDF-1.4 three")
        wait_for(lambda: webhook.delivered("files_failed") and smtp.messages, what="the first digest")
        site.drop("no-such-record", "fourth.pdf", b"%PDF-1.4 four")
        wait_for(lambda: len(webhook.delivered("files_failed")) == 2 and len(smtp.messages) == 2,
                 what="the second digest")
    finally:
        daemon.stop()

    first, second = webhook.delivered("files_failed")
    assert [first.document["count"], second.document["count"]] == [3, 1]
    files = {f["file"]: f for f in first.document["files"]}
    assert set(files) == {"fulcrum/rec-1/first.pdf", "fulcrum/rec-2/second.pdf", "fulcrum/no-such-record/third.pdf"}
    assert [f["file"] for f in second.document["files"]] == ["fulcrum/no-such-record/fourth.pdf"]
    assert "field refused for API token" in files["fulcrum/rec-1/first.pdf"]["reason"]
    assert files["fulcrum/rec-1/first.pdf"]["status"] == 422
    assert files["fulcrum/no-such-record/third.pdf"]["moved_to"].endswith("failed/fulcrum/no-such-record/third.pdf")
    for request in webhook.requests:
        verify_signature(request)
        assert request.headers["X-Hotfolder-Alert-Id"] == request.document["id"]
        assert request.headers["X-Team"] == "ops"
    assert first.document["server"] == "scan-test"

    mail = smtp.messages[0]
    assert mail["Subject"] == "[hotfolder scan-test] 3 files failed"
    assert mail["X-Hotfolder-Alert-Id"] == first.document["id"]  # the same alert, the same id on both channels
    assert first.document["id"] in mail["Message-ID"]
    text = mail.get_content()
    for name in files:
        assert name in text
    assert "reason: " in text and "field refused for API token" in text
    assert smtp.messages[1]["Subject"] == "[hotfolder scan-test] 1 file failed"
    assert_no_secret(webhook, smtp)


def _deliveries(site: Site) -> list[tuple[str, str, int, Any]]:
    with sqlite3.connect(outbox_path(site.journal_path)) as conn:
        return conn.execute(
            "SELECT a.kind, d.channel, d.attempts, d.delivered_at FROM deliveries d JOIN alerts a ON a.id = d.alert_id"
        ).fetchall()


def test_an_alert_made_while_the_receivers_are_down_arrives_when_they_are_back(
    site: Site, webhook: WebhookReceiver, smtp: SmtpReceiver
) -> None:
    daemon = running(site, notify=notify(webhook, smtp, digest_interval="500ms"))
    try:
        site.drop("no-such-record", "lost.pdf", b"%PDF-1.4 x")
        wait_for(lambda: site.failed.joinpath("fulcrum/no-such-record/lost.pdf").exists(), what="the failure")
        # Both channels tried and failed at least twice (nothing listens), and the upload was not held up.
        wait_for(lambda: (rows := _deliveries(site)) and all(r[2] >= 2 and r[3] is None for r in rows),
                 what="failed attempts on both channels")
        webhook.refuse = 1  # once back, the receiver's first answer is still a 503
        webhook.start(), smtp.start()
        wait_for(lambda: webhook.delivered() and smtp.messages, what="the alert after the receivers came back")
    finally:
        daemon.stop()
    ids = {request.document["id"] for request in webhook.requests}
    assert len(ids) == 1 and [r.status for r in webhook.requests] == [503, 200]
    assert len(smtp.messages) == 1 and smtp.messages[0]["X-Hotfolder-Alert-Id"] in ids
    assert "fulcrum/no-such-record/lost.pdf" in smtp.messages[0].get_content()


def _start_daemon(site: Site, log: Path) -> subprocess.Popen[bytes]:
    env = {**env_for_daemon(), **ENVIRON}
    out = open(log, "ab")  # noqa: SIM115 - closed by the OS when the child ends
    return subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "-c", str(site.config_path)],
                            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=harness.ROOT)


def _outbox_rows(site: Site, sql: str) -> list[tuple[Any, ...]]:
    path = outbox_path(site.journal_path)
    if not path.exists():
        return []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []  # the daemon is creating it


def test_an_alert_survives_kill_9_and_the_unclean_stop_is_told(
    site: Site, webhook: WebhookReceiver, tmp_path: Path
) -> None:
    write_config(site.root, site.sandbox.url, notify=notify(webhook, digest_interval="300ms"))
    site.drop("no-such-record", "orphan.pdf", b"%PDF-1.4 orphan")
    log = tmp_path / "daemon.log"
    first = _start_daemon(site, log)
    try:
        made = wait_for(lambda: _outbox_rows(
            site, "SELECT a.id FROM alerts a JOIN deliveries d ON d.alert_id = a.id "
                  "WHERE a.kind = 'files_failed' AND d.attempts >= 1"), what="a failed delivery of the digest")
    finally:
        kill9(first)
    webhook.start()
    second = _start_daemon(site, log)
    try:
        wait_for(lambda: webhook.delivered("files_failed") and webhook.delivered("unclean_stop"),
                 what="the digest and the unclean-stop alert after the restart")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    (digest,) = webhook.delivered("files_failed")
    assert digest.document["id"] == made[0][0]
    assert [f["file"] for f in digest.document["files"]] == ["fulcrum/no-such-record/orphan.pdf"]
    (unclean,) = webhook.delivered("unclean_stop")
    assert unclean.document["previous_run"]["pid"] == first.pid
    for request in webhook.requests:
        verify_signature(request)
    assert _outbox_rows(site, "SELECT stopped_at > 0 FROM runs ORDER BY id DESC LIMIT 1") == [(1,)]
    assert_no_secret(webhook, None)
    assert all(secret not in log.read_text() for secret in SECRETS)


def test_failures_the_crashed_run_did_not_note_are_sent_after_the_restart(
    site: Site, webhook: WebhookReceiver
) -> None:
    # A run that never stopped (its process died) is in the outbox; meanwhile a file failed that it never
    # noted (here: a run without alerts). The next start with alerts finds it in the journal.
    outbox = Outbox(outbox_path(site.journal_path))
    outbox.begin_run(pid=999_999, now=1.0)
    outbox.close()
    site.drop("no-such-record", "unnoted.pdf", b"%PDF-1.4 unnoted")
    assert harness.run_once_in_process(site) == 1
    webhook.start()
    daemon = running(site, notify=notify(webhook, digest_interval="300ms"))
    try:
        wait_for(lambda: webhook.delivered("files_failed") and webhook.delivered("unclean_stop"), what="alerts")
    finally:
        daemon.stop()
    (digest,) = webhook.delivered("files_failed")
    assert [f["file"] for f in digest.document["files"]] == ["fulcrum/no-such-record/unnoted.pdf"]


def test_a_paused_target_is_told_and_so_is_its_recovery(site: Site, webhook: WebhookReceiver) -> None:
    webhook.start()
    # The vendor's answer quotes the token: the pause's reason comes straight from it.
    site.sandbox.add_fault("POST", r"^/api/v2/attachments$", status=429, count=1000, headers={"Retry-After": "1"},
                           body=json.dumps({"error": f"slow down, X-ApiToken {TOKEN}"}))
    daemon = running(site, notify=notify(webhook, alert_after="1s"))
    try:
        site.drop("rec-1", "paced.pdf", b"%PDF-1.4 paced")
        wait_for(lambda: webhook.delivered("target_paused"), what="the paused alert")
        site.sandbox.clear_faults()
        wait_for(lambda: webhook.delivered("target_recovered"), what="the recovery")
        wait_for(lambda: site.done.joinpath("fulcrum/rec-1/paced.pdf").exists(), what="the file done")
    finally:
        daemon.stop()
    (paused,) = webhook.delivered("target_paused")
    assert paused.document["target"] == "fulcrum" and "429" in paused.document["reason"]
    (recovered,) = webhook.delivered("target_recovered")
    assert recovered.document["paused_since"] == paused.document["paused_since"]
    assert webhook.delivered("files_failed") == []
    assert_no_secret(webhook, None)


def test_a_file_not_ready_for_too_long_is_told(site: Site, webhook: WebhookReceiver) -> None:
    webhook.start()
    daemon = running(site, notify=notify(webhook, alert_after="1s"),
                     watch={"check_complete": True, "settle": "100ms"})
    try:
        site.drop("rec-1", "half.pdf", b"%PDF-1.4\n" + b"x" * 2000)  # no %%EOF: its end is missing
        wait_for(lambda: webhook.delivered("files_waiting"), what="the waiting alert")
    finally:
        daemon.stop()
    (waiting,) = webhook.delivered("files_waiting")
    (entry,) = waiting.document["files"]
    assert entry["file"] == "fulcrum/rec-1/half.pdf" and "EOF" in entry["reason"]


# --- the email channel's TLS and login, against the real server ----------------------------------------


def _email_channel(smtp: SmtpReceiver, **overrides: Any) -> Any:
    from hotfolder.alerts.options import EmailSettings
    from hotfolder.alerts.smtp import EmailChannel

    settings = {"host": "127.0.0.1", "port": smtp.port, "security": "starttls", "username": SMTP_USER,
                "password": SMTP_PASSWORD, "sender": "hotfolder@example.test", "recipients": ("ops@example.test",),
                "verify_tls": True, "ca_file": smtp.cert_file, "timeout": 5.0, **overrides}
    return EmailChannel(EmailSettings(**settings))


def _an_alert() -> Any:
    from hotfolder.alerts import messages
    from hotfolder.alerts.outbox import Delivery

    alert = messages.unclean_stop("scan-test", 4242, 0.0, 60.0, 3, 120.0)
    return Delivery(alert.id, alert.kind, alert.body, 0)


def test_email_is_never_sent_in_clear_when_starttls_is_asked(tmp_path: Path) -> None:
    from hotfolder.alerts.channels import DeliveryError

    plain = SmtpReceiver(tmp_path, tls="none").start()  # offers no STARTTLS
    try:
        with pytest.raises(DeliveryError, match="STARTTLS"):
            _email_channel(plain).send(_an_alert())
        assert plain.messages == []
    finally:
        plain.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the receiver's TLS is implicit
def test_email_over_implicit_tls(tmp_path: Path) -> None:
    server = SmtpReceiver(tmp_path, tls="implicit").start()
    try:
        _email_channel(server, security="tls").send(_an_alert())
        (mail,) = server.messages
        assert mail["X-Hotfolder-Alert-Id"] and "unclean stop" in mail["Subject"]
    finally:
        server.stop()


def test_email_checks_the_certificate_unless_told_not_to(smtp: SmtpReceiver) -> None:
    from hotfolder.alerts.channels import DeliveryError

    smtp.start()
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        _email_channel(smtp, ca_file=None).send(_an_alert())  # self-signed: not in the system's store
    with pytest.raises(DeliveryError) as refused:
        _email_channel(smtp, password="wrong-password-31337").send(_an_alert())
    assert "wrong-password-31337" not in str(refused.value)
    assert smtp.messages == []
    _email_channel(smtp, ca_file=None, verify_tls=False).send(_an_alert())
    (mail,) = smtp.messages
    assert mail["Subject"] == "[hotfolder scan-test] started again after an unclean stop"
    assert "pid 4242" in mail.get_content() and "3 unfinished jobs resume" in mail.get_content()


def test_a_damaged_outbox_is_put_aside_and_alerts_go_on(site: Site, webhook: WebhookReceiver) -> None:
    outbox = outbox_path(site.journal_path)
    outbox.parent.mkdir(parents=True, exist_ok=True)
    outbox.write_bytes(b"not a database at all " * 400)
    webhook.start()
    daemon = running(site, notify=notify(webhook, digest_interval="300ms"))
    try:
        site.drop("no-such-record", "after-damage.pdf", b"%PDF-1.4 d")
        wait_for(lambda: webhook.delivered("files_failed"), what="the digest")
    finally:
        daemon.stop()
    assert len(list(outbox.parent.glob(outbox.name + ".damaged-*"))) == 1
