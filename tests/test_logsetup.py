"""Log output: JSON or console, one handler however often configured, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from hotfolder.logsetup import (
    configure_logging,
    get_logger,
    redact,
    redact_value,
    register_secret,
)

TOKEN = "fulcrum-token-5f1c2e9a7b"
SIGNATURE = "9d6e1f0c8b7a6e5d4c3b2a19f8e7d6c5"
CREDENTIAL = "AKIAEXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
PRESIGNED = (
    "https://s3.example.com/bucket/photo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={CREDENTIAL}&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900"
    f"&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}"
)
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.sig-part"
NESTED_KEY = "espo-key-0a1b2c3d"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    yield out
    # Leave the root logger as pytest expects it: drop our handler again.
    configure_logging("warning", json=True, stream=io.StringIO())
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "_HotfolderHandler":
            root.removeHandler(handler)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_structlog_event_carries_no_secret(stream: io.StringIO) -> None:
    register_secret(TOKEN)
    get_logger("hotfolder.test").info(
        "upload_started",
        file="photo.jpg",
        url=PRESIGNED,
        note=f"sent with token {TOKEN}",
        headers="Authorization: Bearer " + BEARER,
        vendor={"name": "espocrm", "auth": {"api_key": NESTED_KEY}},
        token=TOKEN,
    )
    text = stream.getvalue()
    for secret in (TOKEN, SIGNATURE, CREDENTIAL, BEARER, NESTED_KEY):
        assert secret not in text
    (line,) = _lines(stream)
    assert line["event"] == "upload_started"
    assert line["file"] == "photo.jpg"
    assert line["level"] == "info"
    assert str(line["timestamp"]).endswith("Z")
    assert line["vendor"] == {"name": "espocrm", "auth": {"api_key": "[redacted]"}}
    assert "X-Amz-Date=20250101T000000Z" in str(line["url"])  # harmless parameters stay readable


def test_stdlib_records_are_redacted_through_the_same_handler(stream: io.StringIO) -> None:
    logging.getLogger("httpx").warning("HTTP Request: PUT %s failed", PRESIGNED)
    logging.getLogger("watchdog.observers").error("plain message")
    lines = _lines(stream)
    assert SIGNATURE not in stream.getvalue() and CREDENTIAL not in stream.getvalue()
    assert [line["logger"] for line in lines] == ["httpx", "watchdog.observers"]
    assert lines[0]["level"] == "warning"
    assert "HTTP Request: PUT https://s3.example.com/bucket/photo.jpg" in str(lines[0]["event"])


def test_httpx_info_is_silenced(stream: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET %s", PRESIGNED)
    logging.getLogger("httpcore").debug("connect_tcp.started")
    assert stream.getvalue() == ""


def test_exception_text_is_redacted(stream: io.StringIO) -> None:
    log = get_logger()
    try:
        raise RuntimeError(f"PUT {PRESIGNED} answered 403")
    except RuntimeError as error:
        log.exception("upload_failed", error=error)
    (line,) = _lines(stream)
    assert SIGNATURE not in stream.getvalue()
    assert "RuntimeError" in str(line["exception"])
    assert "RuntimeError" in str(line["error"])


def test_configuring_twice_does_not_duplicate_lines(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    configure_logging("info", json=True, stream=out)
    get_logger().info("once")
    logging.getLogger("watchdog").warning("also once")
    assert [line["event"] for line in _lines(out)] == ["once", "also once"]
    assert stream.getvalue() == ""  # the old handler is gone


def test_console_mode_is_readable_and_redacted(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging("info", json=False, stream=out)
    get_logger().info("file_done", file="photo.jpg", url=PRESIGNED)
    text = out.getvalue()
    assert "file_done" in text and "photo.jpg" in text
    assert SIGNATURE not in text
    assert "\x1b[" not in text  # no colours when not on a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_auto_mode_picks_json_off_a_terminal(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    get_logger().info("auto")
    assert _lines(out)[0]["event"] == "auto"


def test_level_filters_and_bad_level_is_refused(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging("warning", json=True, stream=out)
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [line["event"] for line in _lines(out)] == ["shown"]
    with pytest.raises(ValueError, match="log level"):
        configure_logging("chatty")


def test_logger_made_before_configuring_follows_the_configuration() -> None:
    early = structlog.get_logger("hotfolder.early")
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    try:
        early.info("late_bound")
        assert _lines(out)[0]["event"] == "late_bound"
    finally:
        for handler in list(logging.getLogger().handlers):
            if type(handler).__name__ == "_HotfolderHandler":
                logging.getLogger().removeHandler(handler)


# -- redact and redact_value on their own ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (PRESIGNED, SIGNATURE),
        (PRESIGNED, CREDENTIAL),
        ("https://x/y?X-Amz-Security-Token=IQoJb3JpZ2lu&a=1", "IQoJb3JpZ2lu"),
        ("https://x/y?AWSAccessKeyId=AKIA123&Signature=abc%2Bdef&Expires=1", "AKIA123"),
        ("https://x/y?AWSAccessKeyId=AKIA123&Signature=abc%2Bdef&Expires=1", "abc%2Bdef"),
        ("https://api.example.com/v1?access_token=tok123456&page=2", "tok123456"),
        ("https://api.example.com/v1?TOKEN=tok123456", "tok123456"),
        ("GET /records?api_key=k-998877", "k-998877"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("authorization: Token token=abcd1234, email=x", "abcd1234"),
        ('Token token="abcd1234"', "abcd1234"),
        ("Bearer " + BEARER, BEARER),
        ("X-ApiToken: f00dfeed", "f00dfeed"),
        ('Authorization: Digest username="bob", response="6629fae4"', "6629fae4"),
        ("PUT /x\r\nAuthorization: Bearer qq11\r\nHost: h", "qq11"),
        ("x-api-key: f00dfeed", "f00dfeed"),
        ("X-Hmac-Authorization: dXNlcjpobWFj", "dXNlcjpobWFj"),
        ("{'X-ApiToken': 'f00dfeed', 'Accept': 'application/json'}", "f00dfeed"),
        ('{"Authorization": "Bearer zzz999"}', "zzz999"),
        ("{'key': 'a/b.jpg', 'policy': 'eyJleHBpcmF0aW9u', 'x-amz-signature': 'ffee00'}", "eyJleHBpcmF0aW9u"),
        ("{'key': 'a/b.jpg', 'policy': 'eyJleHBpcmF0aW9u', 'x-amz-signature': 'ffee00'}", "ffee00"),
    ],
)
def test_redact_patterns(text: str, secret: str) -> None:
    scrubbed = redact(text)
    assert secret not in scrubbed
    assert "[redacted]" in scrubbed


def test_redact_keeps_harmless_text() -> None:
    harmless = "moved photo.jpg to done/fulcrum/rec-1 (next_token=abc is a cursor, tokens=3)"
    assert redact(harmless) == harmless
    assert redact("{'key': 'a/b.jpg'}") == "{'key': 'a/b.jpg'}"


def test_registered_secrets_are_replaced_anywhere_including_url_encoded() -> None:
    register_secret("s3cr3t/with+chars")
    register_secret("abc")  # too short to scrub safely: ignored
    text = redact("x=s3cr3t/with+chars y=s3cr3t%2Fwith%2Bchars abc")
    assert "s3cr3t" not in text
    assert text.endswith(" abc")


def test_redact_value_walks_containers_and_keeps_types() -> None:
    register_secret(TOKEN)
    data = {
        "job_id": 3,
        "reason": f"403 from {PRESIGNED}",
        "steps": ["hash", f"presign with {TOKEN}"],
        "pair": ("ok", TOKEN),
        "Client-Secret": "anything",
        "ratio": 0.5,
        "missing": None,
    }
    result = redact_value(data)
    assert isinstance(result, dict)
    assert result["job_id"] == 3 and result["ratio"] == 0.5 and result["missing"] is None
    assert result["Client-Secret"] == "[redacted]"
    assert result["pair"] == ("ok", "[redacted]")
    assert TOKEN not in json.dumps(result) and SIGNATURE not in json.dumps(result)


def test_journald_lines_carry_their_priority_and_stay_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under systemd, stdout is journald's stream when JOURNAL_STREAM names its device and inode: each line
    then starts with its sd-daemon(3) priority (debug 7, info 6, warning 4, error 3), the JSON unchanged."""
    path = tmp_path / "journal-stream"
    with open(path, "w") as out:
        st = path.stat()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        try:
            configure_logging("debug", json=True, stream=out)
            log = get_logger("hotfolder.test")
            log.debug("d")
            log.info("i", token=TOKEN)
            log.warning("w")
            log.error("e")
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # another stream: no prefix
            configure_logging("debug", json=True, stream=out)
            log.info("plain")
        finally:
            configure_logging("warning", json=True, stream=io.StringIO())
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines[:4]] == ["<7>", "<6>", "<4>", "<3>"]
    assert [json.loads(line[3:])["event"] for line in lines[:4]] == ["d", "i", "w", "e"]
    assert TOKEN not in path.read_text()
    assert json.loads(lines[4])["event"] == "plain"
