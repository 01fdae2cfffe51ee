"""The ``notify:`` section: what check-config accepts and refuses (naming the key, never showing a
secret), which values the log redacts, and that ``hotfolder config-schema`` agrees with it key by key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hotfolder.config import parse_settings, secret_values
from hotfolder.errors import ConfigError
from tests.test_config import base
from tests.test_config_schema import GAPS, PROBES, schema_errors

REPO = Path(__file__).resolve().parent.parent
ENV = {"FULCRUM_API_TOKEN": "fulcrum-token-1234", "HOOK": "hook-secret-9f8e", "PASS": "smtp-pass-7a6b",
       "HOOK_URL": "https://chat.example/hooks/T000/B000/xyzSECRETxyz", "AUTH": "Bearer auth-token-55aa"}

NOTIFY: dict[str, Any] = {
    "webhooks": [{"url": "https://hooks.example.com/h?team=ops", "secret": "${HOOK}",
                  "headers": {"X-Team": "ops", "X-Auth": "${AUTH}"}},
                 {"url": "${HOOK_URL}", "name": "chat"}],
    "email": {"host": "smtp.example.com", "username": "u@example.com", "password": "${PASS}",
              "from": "hotfolder@example.com", "to": ["ops@example.com", "oncall@example.com"]},
}


def with_notify(section: Any) -> dict[str, Any]:
    data = base()
    data["notify"] = copy.deepcopy(section)
    return data


def refusal(section: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_settings(with_notify(section), ENV)
    for secret in ENV.values():
        assert secret not in str(caught.value)
    return caught.value


def test_a_whole_section_and_its_defaults() -> None:
    notify = parse_settings(with_notify(NOTIFY), ENV).notify
    assert notify is not None
    assert (notify.digest_interval, notify.alert_after, notify.name) == (900.0, 600.0, None)
    first, chat = notify.webhooks
    assert (first.name, first.url, first.secret, first.verify_tls) == (
        "webhook-1", "https://hooks.example.com/h?team=ops", ENV["HOOK"], True)
    assert chat.name == "chat" and chat.url_is_secret and not first.url_is_secret
    email = notify.email
    assert email is not None
    assert (email.port, email.security, email.sender, email.recipients) == (
        587, "starttls", "hotfolder@example.com", ("ops@example.com", "oncall@example.com"))
    tls = parse_settings(with_notify({"email": {**NOTIFY["email"], "security": "tls"}}), ENV).notify
    assert tls is not None and tls.email is not None and tls.email.port == 465
    assert parse_settings(with_notify(None), ENV).notify is None


def test_every_notify_secret_is_redacted_and_nothing_else() -> None:
    secrets = secret_values(parse_settings(with_notify(NOTIFY), ENV))
    for name in ("HOOK", "PASS", "HOOK_URL", "AUTH"):
        assert ENV[name] in secrets
    assert "ops" not in secrets and "https://hooks.example.com/h?team=ops" not in secrets
    literal = {"webhooks": [{"url": "https://h.example", "headers": {"Authorization": "Bearer written-in-file"}}]}
    assert "Bearer written-in-file" in secret_values(parse_settings(with_notify(literal), ENV))


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({}, "notify", "no channel"),
        ({"webhooks": []}, "notify", "no channel"),
        ({"webhooks": {"url": "https://h.example"}}, "notify.webhooks", "a list"),
        ({"webhooks": [{"url": "https://user:pw@h.example"}]}, "notify.webhooks[0].url", "credentials"),
        ({"webhooks": [{"url": "ftp://h.example"}]}, "notify.webhooks[0].url", "http://"),
        ({"webhooks": [{"url": "${HOOK}"}]}, "notify.webhooks[0].url", "from the environment"),
        ({"webhooks": [{"url": "https://h.example", "headers": {"Content-Type": "text/plain"}}]},
         "notify.webhooks[0].headers.Content-Type", "set by hotfolder"),
        ({"webhooks": [{"url": "https://h.example", "headers": {"X-A": "one\ntwo"}}]},
         "notify.webhooks[0].headers.X-A", "one line"),
        ({"webhooks": [{"url": "https://a.example", "name": "x"}, {"url": "https://b.example", "name": "x"}]},
         "notify.webhooks[1].name", "another webhook"),
        ({"webhooks": [{"url": "https://h.example", "sekret": "x"}]}, "notify.webhooks[0].sekret", "secret"),
        ({"email": {**NOTIFY["email"], "username": None}}, "notify.email.username", "required"),
        ({"email": {**NOTIFY["email"], "security": "none"}}, "notify.email.security", "in clear"),
        ({"email": {**NOTIFY["email"], "to": ["ops@example.com", "not an address"]}}, "notify.email.to[1]",
         "email address"),
        ({"email": {**NOTIFY["email"], "to": []}}, "notify.email.to", "non-empty list"),
        ({**NOTIFY, "retry_backoff": "1m", "retry_max_backoff": "10s"}, "notify.retry_max_backoff", "at least"),
        ({**NOTIFY, "digest_interval": "0s"}, "notify.digest_interval", "greater than 0"),
    ],
)
def test_refusals_name_the_key_and_show_no_secret(section: Any, key: str, words: str) -> None:
    error = refusal(section)
    assert error.key == key
    assert words in str(error)


def _example_notify() -> dict[str, Any]:
    """The commented-out ``notify:`` block of config.example.yaml, uncommented."""
    text = (REPO / "config.example.yaml").read_text()
    block = re.search(r"^#notify:\n(?:#  .*\n)+", text, re.MULTILINE)
    assert block is not None
    return yaml.safe_load("\n".join(line[1:] for line in block.group(0).splitlines()))


def test_the_example_block_is_valid_when_uncommented() -> None:
    data = base()
    data.update(_example_notify())
    assert schema_errors(data) == []
    env = {**ENV, "HOTFOLDER_WEBHOOK_SECRET": "x" * 8, "HOOK_TOKEN": "y" * 8, "HOTFOLDER_SMTP_PASSWORD": "z" * 8}
    notify = parse_settings(data, env).notify
    assert notify is not None and notify.email is not None and len(notify.webhooks) == 1


# --- the schema and check-config agree, value by value, on every notify key ----------------------------

# Besides the general gaps: username and password come as a pair, a rule spanning keys.
NOTIFY_GAPS = [*GAPS, (lambda path, value: path.endswith(("username", "password")) and value is None, "half a pair")]


def _notify_paths() -> list[str]:
    from hotfolder.alerts.options import EMAIL_OPTIONS, NOTIFY_OPTIONS, WEBHOOK_OPTIONS

    return ([f"notify.{name}" for name in (*NOTIFY_OPTIONS, "webhooks", "email")]
            + [f"notify.webhooks[0].{name}" for name in WEBHOOK_OPTIONS]
            + [f"notify.email.{name}" for name in EMAIL_OPTIONS])


def _set(path: str, value: Any) -> dict[str, Any]:
    data = with_notify(NOTIFY)
    if path == "notify.retry_max_backoff":
        data["notify"]["retry_backoff"] = "1ms"  # so that the rule max >= backoff stays out of the way
    node: Any = data
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    node[parts[-1]] = copy.deepcopy(value)
    return data


@pytest.mark.parametrize("path", _notify_paths())
def test_schema_and_check_config_agree_on_notify(path: str) -> None:
    disagreements = []
    for value in [*PROBES, "ops@example.com", ["a@b.example"], {"X-Team": "ops"}, {"Host": "x"}, "starttls"]:
        data = _set(path, value)
        try:
            parse_settings(data, {**ENV, "SET": "x"})
            refused = None
        except ConfigError as error:
            if not (error.key == path or error.key.startswith((f"{path}.", f"{path}["))):
                continue  # a rule spanning keys (a username needs its password), or no channel left
            refused = str(error)
        errors = schema_errors(data)
        if refused is None and errors:
            disagreements.append(f"{value!r}: check-config accepts, the schema refuses: {errors[0][:200]}")
        elif refused is not None and not errors and not any(gap(path, value) for gap, _ in NOTIFY_GAPS):
            disagreements.append(f"{value!r}: the schema accepts, check-config refuses: {refused}")
    assert disagreements == []
