"""Logging: JSON lines for machines, readable lines for people, and never a secret in either.

Every line, whether it comes from our structlog loggers or from a library logging through
the stdlib (httpx, httpcore, watchdog), ends in the same ``ProcessorFormatter`` on one
root handler. That formatter runs the shared tail of the chain:

    add level, ISO UTC timestamp, stack/exception formatting, redaction, renderer

Redaction is last before the renderer on purpose: by then tracebacks have been turned
into text, so a URL inside an exception message is scrubbed too. Objects that are not
plain data are turned into their ``repr`` before scrubbing, because the renderer would
otherwise call ``repr`` on them *after* redaction.

Two kinds of scrubbing:
* exact values registered with ``register_secret`` (tokens from the config), and
* patterns for the shapes secrets take on the wire: presigned-URL query parameters,
  auth headers, Bearer tokens, presigned-POST form fields.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from hotfolder.vendors import SECRET_KEYS

REDACTED = "[redacted]"
_MIN_SECRET_LENGTH = 4
_NOISY_LOGGERS = ("httpx", "httpcore")  # log every request URL at INFO; presigned URLs carry signatures

# -- patterns ------------------------------------------------------------------------------------

# Every vendor option marked secret (vendors.SECRET_KEYS: token, api_key, ...) is also a query
# parameter name to scrub, beside the names presigned URLs and OAuth put credentials under.
_QUERY_PARAMS = (
    "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature",
    "AWSAccessKeyId", "access_token", *sorted(SECRET_KEYS),
)
_HEADER_NAMES = (
    "Proxy-Authorization", "X-Hmac-Authorization", "Authorization", "X-ApiToken", "X-Api-Key",
)
_FORM_FIELDS = (
    "policy", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature",
    "awsaccesskeyid",
)

# name=value in a query string (or in "Token token=<x>"). The look-behind keeps
# "next_token=" and "X-Amz-Signature=" from matching the shorter names by accident.
_QUERY_RE = re.compile(
    r"(?<![\w-])(?P<key>" + "|".join(map(re.escape, _QUERY_PARAMS)) + r")=(?P<quote>[\"']?)"
    r"(?P<value>[^&\s\"'<>#,;]+)",
    re.IGNORECASE,
)
# Header: value, in raw form ("Authorization: Bearer x") or in a dict repr / JSON
# ("'Authorization': 'Bearer x'"). An unquoted value runs to the end of the line, quotes
# included: Digest credentials carry quoted parts, and redacting too much is the safe error.
_HEADER_RE = re.compile(
    r"(?P<key>\b(?:" + "|".join(map(re.escape, _HEADER_NAMES)) + r"))(?P<kq>[\"']?)\s*[:=]\s*"
    r"(?:(?P<quote>[\"'])(?P<qvalue>[^\"'\r\n]*)(?P=quote)|(?P<value>[^\r\n]+))",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"\b(?P<key>Bearer)\s+(?P<value>[A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
# Presigned-POST form fields as they look in a dict repr or JSON: 'policy': 'eyJ...'.
_FORM_RE = re.compile(
    r"(?P<q>[\"'])(?P<key>" + "|".join(map(re.escape, _FORM_FIELDS)) + r")(?P=q)\s*:\s*"
    r"(?P<vq>[\"'])(?P<value>[^\"']*)(?P=vq)",
    re.IGNORECASE,
)

# Keys whose values are secret whatever they look like (compared lower-case, "-" as "_"): the vendor
# options marked secret, and the names credentials go by on the wire and in vendors' answers.
_SECRET_KEYS = SECRET_KEYS | frozenset({
    "apikey", "password", "passwd",
    "authorization", "proxy_authorization", "x_apitoken", "x_api_key", "x_hmac_authorization",
    "access_token", "refresh_token", "api_token", "policy", "signature", "x_amz_signature",
    "x_amz_credential", "x_amz_security_token", "awsaccesskeyid",
})
_SECRET_KEY_SUFFIXES = ("_token", "_secret", "_password", "_api_key")


def _scrub_query(match: re.Match[str]) -> str:
    return f"{match['key']}={match['quote']}{REDACTED}"


def _scrub_header(match: re.Match[str]) -> str:
    # Keep "Name: " (and any quotes around the value); replace only the value.
    quote = match["quote"] or ""
    value_start = match.start("quote") if quote else match.start("value")
    return f"{match.string[match.start():value_start]}{quote}{REDACTED}{quote}"


def _scrub_bearer(match: re.Match[str]) -> str:
    return f"{match['key']} {REDACTED}"


def _scrub_form(match: re.Match[str]) -> str:
    return f"{match.string[match.start():match.start('value')]}{REDACTED}{match['vq']}"


# What every pattern above needs at least one of: a header or form field needs ":" or "=", a
# query parameter "=", a token "Bearer". Most logged values (file names, record ids, targets) have
# none, and one search is cheaper than four substitutions on every value of every line.
_MAYBE_SHAPED_RE = re.compile(r"[:=]|bearer", re.IGNORECASE)

# Headers first: "Authorization: Bearer x" is then scrubbed whole, Bearer catches the rest.
_PATTERNS = (
    (_HEADER_RE, _scrub_header),
    (_BEARER_RE, _scrub_bearer),
    (_QUERY_RE, _scrub_query),
    (_FORM_RE, _scrub_form),
)

# -- registered secrets --------------------------------------------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# Rebuilt on every registration; readers take the current object without locking.
_secrets_re: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Scrub this exact string (and its URL-encoded form) from every log line from now on."""
    if not isinstance(value, str) or len(value) < _MIN_SECRET_LENGTH:
        return
    global _secrets_re
    with _secrets_lock:
        forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _secrets_re = re.compile("|".join(map(re.escape, ordered)))


def redact(text: str) -> str:
    """``text`` with registered secrets and secret-shaped substrings replaced by ``[redacted]``."""
    secrets_re = _secrets_re
    if secrets_re is not None:
        text = secrets_re.sub(REDACTED, text)
    if _MAYBE_SHAPED_RE.search(text) is None:
        return text
    for pattern, scrub in _PATTERNS:
        text = pattern.sub(scrub, text)
    return text


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    normal = key.lower().replace("-", "_")
    return normal in _SECRET_KEYS or normal.endswith(_SECRET_KEY_SUFFIXES)


def redact_value(value: object) -> object:
    """Redact every string inside dicts, lists and tuples; values under secret keys entirely.

    Other objects are returned as they are, so journal and sidecar data keep their types.
    """
    return _scrub(value, stringify=False)


def _scrub(value: object, *, stringify: bool) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _is_secret_key(key) and value[key] is not None else _scrub(
                value[key], stringify=stringify
            )
            for key in value
        }
    if isinstance(value, list | tuple):
        items = [_scrub(item, stringify=stringify) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, bool | int | float):
        return value
    # Exceptions, paths, httpx URLs...: their repr is what a renderer would print.
    return redact(repr(value)) if stringify else value


def redaction_processor(_logger: WrappedLogger, _method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: scrub every value, and blank values under secret-named keys."""
    for key, value in list(event_dict.items()):
        if _is_secret_key(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(value, stringify=True)
    return event_dict


# -- configuration -------------------------------------------------------------------------------


class _HotfolderHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the one root handler we own, so reconfiguring replaces it instead of adding one."""


def _parse_level(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return number


def _renderer(json: bool, stream: TextIO) -> Processor:
    if json:
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=_isatty(stream))


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def _drop_record_meta(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # ProcessorFormatter adds these for its own use; they must not reach the renderer.
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    return event_dict


def _formatter(json: bool, stream: TextIO) -> structlog.stdlib.ProcessorFormatter:
    # Only for stdlib records: what structlog's own chain adds before handing over.
    foreign_pre_chain: list[Processor] = [
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign_pre_chain,
        processors=[
            _drop_record_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redaction_processor,  # last before rendering: see the module docstring
            _renderer(json, stream),
        ],
    )


# sd-daemon(3) priorities, by logging level: journald reads a "<N>" at the start of a line as its priority.
_JOURNAL_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7


class _JournalPriorityFormatter(logging.Formatter):
    """Puts the line's priority in front of what ``inner`` makes, for journald; the line is unchanged."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _JOURNAL_PRIORITIES if record.levelno >= level), _DEBUG_PRIORITY)
        return f"<{priority}>{self._inner.format(record)}"


def _writes_to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is journald's: ``JOURNAL_STREAM`` ("device:inode") names it (sd-daemon(3)).

    A stream without a file descriptor cannot be compared and is taken at the variable's word."""
    expected = os.environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return expected == f"{st.st_dev}:{st.st_ino}"


def set_level(level: str) -> None:
    """Change the level of the running logging (a reload), keeping its handler."""
    numeric_level = _parse_level(level)
    logging.getLogger().setLevel(numeric_level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, numeric_level))


def configure_logging(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Send structlog and stdlib logging to ``stream`` (stdout) through one redacting handler.

    ``json=None`` picks JSON lines unless ``stream`` is a terminal. Safe to call again:
    the previous handler is replaced, never duplicated. Under systemd, when ``stream`` is journald's
    (``JOURNAL_STREAM``), each line starts with its priority, so ``journalctl -p warning`` filters.
    """
    out = stream if stream is not None else sys.stdout
    use_json = not _isatty(out) if json is None else json

    handler = _HotfolderHandler(out)
    formatter: logging.Formatter = _formatter(use_json, out)
    if _writes_to_journal(out):
        formatter = _JournalPriorityFormatter(formatter)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _HotfolderHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: structlog.testing.capture_logs and reconfiguration must reach
        # loggers that modules created at import time.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "hotfolder") -> structlog.stdlib.BoundLogger:
    """A structlog logger whose lines go through the handler ``configure_logging`` set up."""
    return structlog.stdlib.get_logger(name)
