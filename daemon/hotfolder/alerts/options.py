"""The ``notify:`` section: its option tables, the value parsers only it uses, and the frozen settings.

``hotfolder.config`` reads the section through these tables, as it reads a vendor's keys through the
vendor's table, so a refusal names the key (``notify.webhooks[0].url``) like every other; the rules
that span keys (a password needs a username, and never in clear) are checked in :func:`notify_settings`.

Secrets: a webhook's ``secret``, the SMTP ``password``, and every header value or URL written with
``${NAME}`` (a chat webhook's URL is its own credential) are listed by :meth:`NotifySettings.secrets`
for the log redactor, and never shown in an error.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hotfolder.errors import ConfigError
from hotfolder.options import (
    FromEnv,
    Option,
    absolute_path,
    boolean,
    choice,
    duration,
    found,
    http_url_parts,
    integer,
    nonempty_text,
    refuse,
    required,
    secret,
)

SECURITY_MODES: tuple[str, ...] = ("starttls", "tls", "none")
DEFAULT_PORTS: Mapping[str, int] = MappingProxyType({"starttls": 587, "tls": 465, "none": 25})
# Headers hotfolder sets itself on every webhook request; a configured one may not replace them.
OWN_HEADERS: frozenset[str] = frozenset({
    "content-type", "content-length", "host", "x-hotfolder-alert-id", "x-hotfolder-signature",
    "x-hotfolder-event",
})


# --- value parsers --------------------------------------------------------------------------------


def _has_control(text: str) -> bool:
    return any(char.isspace() or unicodedata.category(char) == "Cc" for char in text)


def webhook_url(value: object, key: str) -> str:
    """An http(s) URL taken as written, query included (some receivers put their key there)."""
    http_url_parts(value, key, "an http:// or https:// URL such as https://hooks.example.com/hotfolder",
                   "use headers or secret")
    return FromEnv(value) if isinstance(value, FromEnv) else str(value)


@dataclass(frozen=True)
class Header:
    name: str
    value: str
    secret: bool  # written with ${NAME}: a credential, redacted from the logs


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def _credential_name(name: str) -> bool:
    """A header that carries a credential by its name, even when its value was written in the file."""
    lower = name.lower()
    return lower.endswith("authorization") or any(word in lower for word in ("token", "key", "secret", "signature"))


def headers(value: object, key: str) -> tuple[Header, ...]:
    """Extra request headers, name: value; a value from ``${NAME}`` counts as a secret."""
    if not isinstance(value, Mapping):
        raise refuse(key, "a mapping of header names to values", value)
    result = []
    for name, text in value.items():
        where = f"{key}.{name}"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(where, f"expected an HTTP header name (letters, digits, -), found {found(name)}")
        if name.lower() in OWN_HEADERS:
            raise ConfigError(where, "is set by hotfolder itself and cannot be configured")
        if not isinstance(text, str) or any(unicodedata.category(char) == "Cc" for char in text):
            raise refuse(where, "text on one line", text, secret=isinstance(text, FromEnv))
        result.append(Header(name, str(text), secret=isinstance(text, FromEnv) or _credential_name(name)))
    return tuple(result)


_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")  # a plain address; no display name


def email_address(value: object, key: str) -> str:
    written = nonempty_text(value, key)
    if not _ADDRESS.fullmatch(written) or _has_control(written):
        raise refuse(key, "an email address such as ops@example.com", value)
    return written


def email_addresses(value: object, key: str) -> tuple[str, ...]:
    """One address or a non-empty list of them."""
    if isinstance(value, str):
        return (email_address(value, key),)
    if not isinstance(value, list) or not value:
        raise refuse(key, "an email address or a non-empty list of them", value)
    return tuple(email_address(item, f"{key}[{index}]") for index, item in enumerate(value))


# --- the tables -------------------------------------------------------------------------------------

NOTIFY_OPTIONS: Mapping[str, Option] = MappingProxyType({
    "name": Option(nonempty_text),  # this server, in every subject and body; default: the host name
    "digest_interval": Option(duration(positive=True), default="15m"),
    "alert_after": Option(duration(positive=True), default="10m"),
    "retry_backoff": Option(duration(positive=True), default="10s"),
    "retry_max_backoff": Option(duration(positive=True), default="30m"),
})
NOTIFY_CHANNELS: tuple[str, ...] = ("webhooks", "email")

WEBHOOK_OPTIONS: Mapping[str, Option] = MappingProxyType({
    "url": required(webhook_url),
    "name": Option(nonempty_text),
    "secret": secret(),
    "headers": Option(headers),
    "verify_tls": Option(boolean, default=True),
    "ca_file": Option(absolute_path),
    "timeout": Option(duration(positive=True), default="10s"),
})

EMAIL_OPTIONS: Mapping[str, Option] = MappingProxyType({
    "host": required(nonempty_text),
    "port": Option(integer(1)),
    "security": Option(choice(*SECURITY_MODES), default="starttls"),
    "username": Option(nonempty_text),
    "password": secret(),
    "from": required(email_address),
    "to": required(email_addresses),
    "verify_tls": Option(boolean, default=True),
    "ca_file": Option(absolute_path),
    "timeout": Option(duration(positive=True), default="30s"),
})


# --- the settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSettings:
    name: str
    url: str
    secret: str | None  # HMAC-SHA256 key for the signature header
    headers: tuple[Header, ...]
    verify_tls: bool
    ca_file: Path | None
    timeout: float
    url_is_secret: bool = False  # written with ${NAME}


@dataclass(frozen=True)
class EmailSettings:
    host: str
    port: int
    security: str  # starttls | tls | none
    username: str | None
    password: str | None
    sender: str
    recipients: tuple[str, ...]
    verify_tls: bool
    ca_file: Path | None
    timeout: float


@dataclass(frozen=True)
class NotifySettings:
    name: str | None  # None: the host name, looked up when the daemon starts
    digest_interval: float
    alert_after: float
    retry_backoff: float
    retry_max_backoff: float
    webhooks: tuple[WebhookSettings, ...] = ()
    email: EmailSettings | None = None

    def secrets(self) -> list[str]:
        found_secrets = [hook.secret for hook in self.webhooks if hook.secret]
        found_secrets += [header.value for hook in self.webhooks for header in hook.headers if header.secret]
        found_secrets += [hook.url for hook in self.webhooks if hook.url_is_secret]
        if self.email is not None and self.email.password:
            found_secrets.append(self.email.password)
        return found_secrets


def _webhook(values: Mapping[str, Any], number: int) -> WebhookSettings:
    return WebhookSettings(
        name=values["name"] or f"webhook-{number}",
        url=str(values["url"]),
        secret=values["secret"],
        headers=values["headers"] or (),
        verify_tls=values["verify_tls"],
        ca_file=values["ca_file"],
        timeout=values["timeout"],
        url_is_secret=isinstance(values["url"], FromEnv),
    )


def _email(values: Mapping[str, Any]) -> EmailSettings:
    key = "notify.email"
    username, password, security = values["username"], values["password"], values["security"]
    if (username is None) != (password is None):
        missing = "password" if password is None else "username"
        raise ConfigError(f"{key}.{missing}", "is required when the other of username and password is given")
    if password is not None and security == "none":
        raise ConfigError(f"{key}.security", "is none, which would send the password in clear; use starttls or tls")
    return EmailSettings(
        host=values["host"],
        port=values["port"] or DEFAULT_PORTS[security],
        security=security,
        username=username,
        password=password,
        sender=values["from"],
        recipients=values["to"],
        verify_tls=values["verify_tls"],
        ca_file=values["ca_file"],
        timeout=values["timeout"],
    )


def notify_settings(
    common: Mapping[str, Any], webhooks: Sequence[Mapping[str, Any]], email: Mapping[str, Any] | None
) -> NotifySettings:
    """The section's settings from its values read through the tables above; rules across keys here."""
    if not webhooks and email is None:
        raise ConfigError("notify", "has no channel: give webhooks, email or both (or leave notify out)")
    if common["retry_max_backoff"] < common["retry_backoff"]:
        raise ConfigError(
            "notify.retry_max_backoff",
            f"expected at least notify.retry_backoff ({common['retry_backoff']:g}s), "
            f"found {common['retry_max_backoff']:g}s",
        )
    hooks = tuple(_webhook(values, number) for number, values in enumerate(webhooks, start=1))
    names = [hook.name for hook in hooks]
    for number, name in enumerate(names):
        if name in names[:number]:
            raise ConfigError(f"notify.webhooks[{number}].name", f"{name!r} is the name of another webhook")
    return NotifySettings(
        name=common["name"],
        digest_interval=common["digest_interval"],
        alert_after=common["alert_after"],
        retry_backoff=common["retry_backoff"],
        retry_max_backoff=common["retry_max_backoff"],
        webhooks=hooks,
        email=None if email is None else _email(email),
    )
