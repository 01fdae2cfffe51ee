"""Settings: the YAML file read once, checked whole, and handed out frozen.

Theory of operation
-------------------
The raw YAML tree is walked once. Every mapping is read through a :class:`_Section` that
knows its dotted key (``targets.fulcrum.token``), refuses keys it does not know, and hands
each value to a small parser ``(value, key) -> typed value``. So every refusal is a
:class:`~hotfolder.errors.ConfigError` naming the key, what was expected and what was found,
and nothing half-checked ever reaches the daemon.

Vendor options are data, not code: :data:`VENDOR_OPTIONS` says, per vendor, each key's
parser, whether it is required, its default and whether it is a secret. A few rules that
span keys (Visibuild's two credential forms) live in :data:`VENDOR_RULES`.

Secrets. ``${VAR}`` in any string value is replaced from the environment when that value is
read. Error messages never show the value of a secret key, nor any text that came from the
environment (it may be a secret pasted into a non-secret key); they name the key and the
variable instead. :func:`secret_values` lists every secret so the logger can redact it.

Units. Durations: ``500ms``, ``5s``, ``2m``, ``1h`` or a bare number of seconds. Sizes: bytes,
or ``K``/``M``/``G`` with optional ``B`` or ``iB``; all of them are powers of 1024
(``20MB`` = ``20MiB`` = 20,971,520 bytes) because chunk sizes are what they size, and a
decimal megabyte there would only surprise.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from hotfolder.errors import ConfigError

DEFAULT_IGNORE: tuple[str, ...] = (
    ".*",
    "*.tmp",
    "*.part",
    "*.crdownload",
    "~$*",
    "Thumbs.db",
    "desktop.ini",
    ".DS_Store",
    "._*",
    "@eaDir/",
)

VENDORS: tuple[str, ...] = ("fulcrum", "fulcrum-layers", "visibuild", "saferme", "espocrm")
WATCH_METHODS: tuple[str, ...] = ("auto", "native", "polling")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
DUPLICATE_POLICIES: tuple[str, ...] = ("skip", "attach")

# Placeholders a name/title/caption template may use; adapters fill every one of them
# (an absent record or group is ""). Checked at load so a typo fails now, not at upload.
TEMPLATE_FIELDS: tuple[str, ...] = ("name", "stem", "suffix", "target", "record", "group")

# The key names that hold secrets in any vendor table (kept in step by a test).
SECRET_KEYS: frozenset[str] = frozenset({"token", "client_secret", "api_key", "secret", "password"})


# --- the settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchSettings:
    method: str
    settle: float
    poll_interval: float
    rescan: float
    ignore: tuple[str, ...]
    check_writers: bool = True
    check_complete: bool = True
    incomplete_timeout: float = 600.0
    attribute_cache: float | None = None  # None: read from the mount table (see hotfolder/watch/mounts.py)


@dataclass(frozen=True)
class RetrySettings:
    attempts: int
    backoff: float
    max_backoff: float


@dataclass(frozen=True)
class TargetSettings:
    name: str
    vendor: str
    url: str
    verify_tls: bool
    timeout: float
    max_requests_per_second: float | None
    max_concurrent_uploads: int | None
    options: Mapping[
        str, Any
    ]  # every option of the vendor's table: validated, defaults filled, None if unset

    def option(self, key: str) -> Any:
        """One vendor option; a key outside the vendor's table is a programming error, so it raises."""
        try:
            return self.options[key]
        except KeyError:
            raise KeyError(f"vendor {self.vendor} has no option {key!r} (target {self.name!r})") from None


@dataclass(frozen=True)
class Settings:
    inbox: Path
    done: Path
    failed: Path
    journal: Path
    watch: WatchSettings
    workers: int
    retry: RetrySettings
    targets: Mapping[str, TargetSettings]
    log_level: str
    duplicates: str
    archive_after: float  # seconds after which a finished job moves to the journal's archive


# --- describing values without leaking them ----------------------------------------------------


class _FromEnv(str):
    """Text that took some of its value from the environment; an error never echoes it."""

    __slots__ = ()


def _kind(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _found(value: object, secret: bool = False) -> str:
    """What was found, for an error message: the value itself only when it is safe to show."""
    if value is None or isinstance(value, list | tuple | Mapping):
        return _kind(value)
    if secret:
        return f"{_kind(value)} (a secret: value not shown)"
    if isinstance(value, _FromEnv):
        return f"{_kind(value)} from the environment (value not shown)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, int | float):
        return f"{_kind(value)} {value!r}"
    return _kind(value)


def _refuse(key: str, expected: str, value: object, secret: bool = False) -> ConfigError:
    return ConfigError(key, f"expected {expected}, found {_found(value, secret)}")


# --- ${VAR} substitution -----------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand_text(text: str, key: str, environ: Mapping[str, str]) -> str:
    if "${" not in text:
        return text
    pieces: list[str] = []
    position = 0
    for match in _REFERENCE.finditer(text):
        name = match.group(1)
        if not _VARIABLE_NAME.fullmatch(name):
            # The malformed text is not echoed: it may be a secret with a stray "${" in it.
            raise ConfigError(
                key, "contains a malformed ${...} reference; expected ${NAME} (letters, digits, _)"
            )
        if name not in environ:
            raise ConfigError(key, f"environment variable {name} is not set")
        pieces.append(text[position : match.start()])
        pieces.append(environ[name])
        position = match.end()
    rest = text[position:]
    if "${" in rest:
        raise ConfigError(key, "contains '${' without a closing '}'; expected ${NAME}")
    return _FromEnv("".join(pieces) + rest)


def _expand(value: object, key: str, environ: Mapping[str, str]) -> object:
    """Substitute ${VAR} in every string inside ``value`` (lists and mappings included)."""
    if isinstance(value, str):
        return _expand_text(value, key, environ)
    if isinstance(value, list):
        return [_expand(item, f"{key}[{index}]", environ) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {name: _expand(item, f"{key}.{name}", environ) for name, item in value.items()}
    return value


# --- units -------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmg])(?:i?b)?|(b))?", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_duration(value: object, key: str) -> float:
    """Seconds from ``500ms``, ``5s``, ``2m``, ``1h``, ``30d`` or a bare number of seconds; never negative."""
    expected = "a duration such as 500ms, 5s, 2m, 1h or 30d (a bare number means seconds)"
    if _is_number(value):
        seconds = float(value)  # type: ignore[arg-type]
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise _refuse(key, expected, value)
    if not math.isfinite(seconds) or seconds < 0:
        raise _refuse(key, expected, value)
    return seconds


def parse_size(value: object, key: str) -> int:
    """Bytes from ``512``, ``20KB``, ``20MB``, ``1GB`` (also K/M/G, KiB/MiB/GiB): all powers of 1024."""
    expected = "a size such as 512, 20KB, 4MB or 1GB (K/M/G are powers of 1024)"
    if isinstance(value, int) and not isinstance(value, bool):
        number, multiplier = float(value), 1
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        number = float(match.group(1))
        multiplier = _SIZE_UNITS[(match.group(2) or "").lower() or None]
    else:
        raise _refuse(key, expected, value)
    size = number * multiplier
    # A fraction of a byte is a typo, not a size; fractions of a unit (1.5GB) are fine.
    if not math.isfinite(size) or size < 0 or (multiplier == 1 and not number.is_integer()):
        raise _refuse(key, expected, value)
    return int(size)


# --- value parsers: (value, key) -> typed value ------------------------------------------------

Parser = Callable[[object, str], Any]


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _refuse(key, "text", value)
    return str(value)  # drop the _FromEnv marker: settings hold plain str


def _nonempty_text(value: object, key: str) -> str:
    text = _text(value, key)
    if not text.strip():
        raise ConfigError(key, "expected non-empty text, found empty text")
    return text


def _secret(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise _refuse(key, "text", value, secret=True)
    if not value.strip():
        raise ConfigError(key, "is empty (if it comes from ${VAR}, that variable is set but empty)")
    return str(value)


def _id_text(value: object, key: str) -> str:
    # Ids written bare in YAML arrive as integers; they are identifiers, so keep them as text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _nonempty_text(value, key)


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise _refuse(key, "true or false", value)
    return value


def _integer(minimum: int) -> Parser:
    def parse(value: object, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise _refuse(key, f"a whole number of at least {minimum}", value)
        return value

    return parse


def _positive_number(value: object, key: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise _refuse(key, "a number greater than 0", value)
    return float(value)  # type: ignore[arg-type]


def _choice(*choices: str) -> Parser:
    def parse(value: object, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _refuse(key, f"one of {', '.join(choices)}", value)
        return str(value)

    return parse


def _duration(*, positive: bool) -> Parser:
    def parse(value: object, key: str) -> float:
        seconds = parse_duration(value, key)
        if positive and seconds <= 0:
            raise _refuse(key, "a duration greater than 0", value)
        return seconds

    return parse


def _auto_or_duration(value: object, key: str) -> float | None:
    """``auto`` (None: the program finds the figure) or a duration of 0 or more."""
    if value == "auto":
        return None
    if _is_number(value) or (isinstance(value, str) and _DURATION.fullmatch(value.strip())):
        return parse_duration(value, key)
    raise _refuse(key, "auto, or a duration such as 1s or 20s", value)


def _size(*, positive: bool) -> Parser:
    def parse(value: object, key: str) -> int:
        size = parse_size(value, key)
        if positive and size <= 0:
            raise _refuse(key, "a size greater than 0", value)
        return size

    return parse


def _template(value: object, key: str) -> str:
    """A str.format template over TEMPLATE_FIELDS, tried once with dummy values to catch typos."""
    text = _text(value, key)
    sample = dict.fromkeys(TEMPLATE_FIELDS, "x")
    known = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    try:
        text.format_map(sample)
    except KeyError as exc:
        raise ConfigError(key, f"unknown placeholder {{{exc.args[0]}}}; expected one of {known}") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ConfigError(
            key, f"is not a valid template ({exc}); use {known} and write literal braces as {{{{ and }}}}"
        ) from None
    return text


def _patterns(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _refuse(key, "a list of file name patterns", value)
    return tuple(_nonempty_text(item, f"{key}[{index}]") for index, item in enumerate(value))


def _absolute_path(value: object, key: str) -> Path:
    text = _nonempty_text(value, key)
    if "\x00" in text:
        raise ConfigError(key, "expected an absolute path, found text with a NUL character")
    if not os.path.isabs(text):
        raise _refuse(key, "an absolute path (~ and relative paths are not expanded)", value)
    # Lexical normalisation only: the folders need not exist yet, so nothing is resolved.
    return Path(os.path.normpath(text))


# A URL path ending like this is the vendor's API root pasted in; adapters add it themselves.
_API_PATH = re.compile(r"/api(?:/core)?(?:/v\d+)?$")


def _url(value: object, key: str) -> str:
    text = _nonempty_text(value, key)
    expected = "an http:// or https:// URL of the vendor's host, such as https://api.fulcrumapp.com"
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in text):
        raise _refuse(key, expected, value)
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refuse(key, expected, value)
    if "@" in parts.netloc:
        # Never echoed: this is where a password would be.
        raise ConfigError(key, "must not carry credentials (user:password@); use the target's secret keys")
    if parts.query or parts.fragment:
        raise _refuse(key, f"{expected}, without ?query or #fragment", value)
    try:
        parts.port  # noqa: B018 - evaluated for its check: a bad port raises here
    except ValueError:
        raise _refuse(key, f"{expected}, with a valid port", value) from None
    path = parts.path.rstrip("/")
    if _API_PATH.search(path):
        raise _refuse(key, f"{expected}; hotfolder adds the API path ({path}) itself", value)
    # A path prefix is kept (a reverse proxy, EspoCRM in a sub-folder); the trailing slash is not.
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# Ticket fields hotfolder sets itself; letting the config set them too would be ambiguous.
_TICKET_OWN_FIELDS = {
    "title": "use title_template",
    "projectId": "the project is the record folder",
    "attachmentKeys": "hotfolder fills in the uploaded attachments",
}


def _json_value(value: object, key: str) -> Any:
    """Free-form JSON-like YAML, frozen; dates and other YAML-only types are refused."""
    if value is None or isinstance(value, str | bool | int):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list):
        return tuple(_json_value(item, f"{key}[{index}]") for index, item in enumerate(value))
    if isinstance(value, dict):
        return MappingProxyType(
            {_field_name(name, key): _json_value(v, f"{key}.{name}") for name, v in value.items()}
        )
    raise _refuse(key, "text, a number, a boolean, a list or a mapping (quote dates)", value)


def _field_name(name: object, parent: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{parent}.{name}", f"field names must be non-empty text, found {_found(name)}")
    return name


def _ticket(value: object, key: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(key, "a mapping of extra ticket fields", value)
    for name in value:
        if name in _TICKET_OWN_FIELDS:
            raise ConfigError(f"{key}.{name}", f"is set by hotfolder, not here: {_TICKET_OWN_FIELDS[name]}")
    return _json_value(value, key)


# --- the vendor table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One vendor-specific key. ``default`` is written as in YAML and goes through ``parse``."""

    parse: Parser
    required: bool = False
    default: object = None
    secret: bool = False


_REQUIRED = object()  # sentinel default: the key must be present


def _required(parse: Parser, *, secret: bool = False) -> Option:
    return Option(parse, required=True, secret=secret)


VENDOR_OPTIONS: Mapping[str, Mapping[str, Option]] = MappingProxyType(
    {
        "fulcrum": {
            "token": _required(_secret, secret=True),
            "field": _required(_nonempty_text),
            "owner": Option(_choice("record", "form"), default="record"),
            "kind": Option(_choice("attachment", "photo"), default="attachment"),
            "caption": Option(_template, default=""),
            "skip_workflows": Option(_boolean, default=False),
            "skip_webhooks": Option(_boolean, default=False),
        },
        "fulcrum-layers": {
            "token": _required(_secret, secret=True),
            "name_template": Option(_template, default="{stem}"),
        },
        "visibuild": {
            # Either a long-lived token or client credentials: VENDOR_RULES checks which.
            "token": Option(_secret, secret=True),
            "client_id": Option(_nonempty_text),
            "client_secret": Option(_secret, secret=True),
            "token_url": Option(_url),
            "title_template": Option(_template, default="{stem}"),
            "ticket": Option(_ticket, default={}),
        },
        "saferme": {
            "token": _required(_secret, secret=True),
            "team_id": _required(_id_text),
            "app_id": Option(_nonempty_text, default="com.thundermaps.saferme"),
            "field": _required(_nonempty_text),
            "installation_id": Option(_nonempty_text),
            "poll_attempts": Option(_integer(1), default=20),
            "poll_interval": Option(_duration(positive=True), default="2s"),
        },
        "espocrm": {
            "api_key": _required(_secret, secret=True),
            "secret": Option(_secret, secret=True),  # present: HMAC authentication instead of X-Api-Key
            "entity": _required(_nonempty_text),
            "field": _required(_nonempty_text),
            "field_type": _required(_choice("file", "attachments")),
            "chunk_threshold": Option(_size(positive=False), default="20MB"),
            "chunk_size": Option(_size(positive=True), default="4MB"),
        },
    }
)


def _fulcrum_rule(options: Mapping[str, Any], key: str) -> None:
    if options["kind"] == "photo" and options["owner"] == "form":
        raise ConfigError(
            f"{key}.owner", "expected record for kind photo (photos belong to records), found form"
        )


def _visibuild_rule(options: Mapping[str, Any], key: str) -> None:
    has_token = options["token"] is not None
    has_id, has_secret = options["client_id"] is not None, options["client_secret"] is not None
    if has_token and (has_id or has_secret):
        raise ConfigError(f"{key}.token", "give either token or client_id with client_secret, not both")
    if not has_token and not (has_id or has_secret):
        raise ConfigError(key, "needs credentials: either token, or both client_id and client_secret")
    if has_id != has_secret:
        missing = "client_secret" if has_id else "client_id"
        raise ConfigError(f"{key}.{missing}", "is required when the other client credential is given")
    if has_token and options["token_url"] is not None:
        raise ConfigError(f"{key}.token_url", "is only used with client_id and client_secret")


VENDOR_RULES: Mapping[str, Callable[[Mapping[str, Any], str], None]] = MappingProxyType(
    {"fulcrum": _fulcrum_rule, "visibuild": _visibuild_rule}
)

_COMMON_TARGET_OPTIONS: Mapping[str, Option] = MappingProxyType(
    {
        "vendor": _required(_choice(*VENDORS)),
        "url": _required(_url),
        "verify_tls": Option(_boolean, default=True),
        "timeout": Option(_duration(positive=True), default="60s"),
        "max_requests_per_second": Option(_positive_number),
        "max_concurrent_uploads": Option(_integer(1)),
    }
)


# --- reading mappings --------------------------------------------------------------------------


def _key_path(parent: str, name: object) -> str:
    return f"{parent}.{name}" if parent else str(name)


def _unknown_key(key: str, name: str, known: Iterable[str], vendor: str | None) -> ConfigError:
    message = "unknown key"
    if vendor is not None:
        owners = [v for v, table in VENDOR_OPTIONS.items() if name in table]
        if owners:
            message += f" for vendor {vendor} (it is an option of {', '.join(owners)})"
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        message += f"; did you mean {close[0]!r}?"
    else:
        message += f"; expected one of {', '.join(sorted(known))}"
    return ConfigError(key, message)


class _Section:
    """One YAML mapping being read: refuses unknown keys, then hands out values by name."""

    def __init__(
        self,
        data: object,
        key: str,
        environ: Mapping[str, str],
        known: Iterable[str],
        vendor: str | None = None,
    ) -> None:
        # A section whose children are all commented out is null in YAML: read it as empty.
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise _refuse(key or "(top level)", "a mapping", data)
        known = tuple(known)
        for name in data:
            if not isinstance(name, str):
                hint = (
                    " (YAML reads yes/no/on/off as booleans: quote the key)" if isinstance(name, bool) else ""
                )
                raise ConfigError(_key_path(key, name), f"keys must be text, found {_found(name)}{hint}")
            if name not in known:
                raise _unknown_key(_key_path(key, name), name, known, vendor)
        self.data: dict[str, object] = data
        self.key = key
        self.environ = environ

    def get(self, name: str, parse: Parser, default: object = None) -> Any:
        key = _key_path(self.key, name)
        raw = self.data.get(name)
        if raw is None:  # absent and null mean the same: use the default
            if default is _REQUIRED:
                raise ConfigError(key, "is required but missing")
            return None if default is None else parse(default, key)
        return parse(_expand(raw, key, self.environ), key)

    def option(self, name: str, option: Option) -> Any:
        return self.get(name, option.parse, _REQUIRED if option.required else option.default)


# --- the whole file ----------------------------------------------------------------------------

_TOP_KEYS = (
    "inbox",
    "done",
    "failed",
    "journal",
    "watch",
    "workers",
    "retry",
    "targets",
    "log_level",
    "duplicates",
    "archive_after",
)


def parse_settings(data: object, environ: Mapping[str, str]) -> Settings:
    """Check a parsed YAML tree and build the frozen settings; the first problem raises ConfigError."""
    if data is None:
        raise ConfigError(
            "(top level)", "the configuration is empty; expected inbox, done, failed, journal, targets"
        )
    top = _Section(data, "", environ, _TOP_KEYS)
    folders = {
        name: top.get(name, _absolute_path, _REQUIRED) for name in ("inbox", "done", "failed", "journal")
    }
    _check_folders(folders)
    return Settings(
        inbox=folders["inbox"],
        done=folders["done"],
        failed=folders["failed"],
        journal=folders["journal"],
        watch=_parse_watch(top.data.get("watch"), environ),
        workers=top.get("workers", _integer(1), 4),
        retry=_parse_retry(top.data.get("retry"), environ),
        targets=_parse_targets(top.data.get("targets"), environ),
        log_level=top.get("log_level", _choice(*LOG_LEVELS), "info"),
        duplicates=top.get("duplicates", _choice(*DUPLICATE_POLICIES), "skip"),
        archive_after=top.get("archive_after", _duration(positive=True), "30d"),
    )


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_folders(folders: Mapping[str, Path]) -> None:
    # The daemon moves files between these trees and scans the inbox recursively: a done/
    # inside the inbox would be scanned as new work, so nesting in any direction is refused.
    trees = ("inbox", "done", "failed")
    for first, second in itertools.combinations(trees, 2):
        a, b = folders[first], folders[second]
        if _inside(a, b) or _inside(b, a):
            raise ConfigError(
                second,
                f"overlapping folders: {second} ({b}) and {first} ({a}) must not be equal or nested",
            )
    journal = folders["journal"]
    if _inside(journal, folders["inbox"]):
        raise ConfigError(
            "journal", f"must not be inside the inbox ({folders['inbox']}): the watcher would see it"
        )
    for tree in trees:
        if journal == folders[tree]:
            raise ConfigError("journal", f"is a file path and must differ from the {tree} folder")


def _parse_watch(data: object, environ: Mapping[str, str]) -> WatchSettings:
    section = _Section(data, "watch", environ, (
        "method", "settle", "poll_interval", "rescan", "ignore", "check_writers", "check_complete",
        "incomplete_timeout", "attribute_cache",
    ))
    return WatchSettings(
        method=section.get("method", _choice(*WATCH_METHODS), "auto"),
        settle=section.get("settle", _duration(positive=False), "5s"),
        poll_interval=section.get("poll_interval", _duration(positive=True), "2s"),
        rescan=section.get("rescan", _duration(positive=True), "5m"),
        ignore=section.get("ignore", _patterns, DEFAULT_IGNORE),
        check_writers=section.get("check_writers", _boolean, True),
        check_complete=section.get("check_complete", _boolean, True),
        incomplete_timeout=section.get("incomplete_timeout", _duration(positive=True), "10m"),
        attribute_cache=section.get("attribute_cache", _auto_or_duration, "auto"),
    )


def _parse_retry(data: object, environ: Mapping[str, str]) -> RetrySettings:
    section = _Section(data, "retry", environ, ("attempts", "backoff", "max_backoff"))
    retry = RetrySettings(
        attempts=section.get("attempts", _integer(1), 8),
        backoff=section.get("backoff", _duration(positive=True), "2s"),
        max_backoff=section.get("max_backoff", _duration(positive=True), "10m"),
    )
    if retry.max_backoff < retry.backoff:
        raise ConfigError(
            "retry.max_backoff",
            f"expected at least retry.backoff ({retry.backoff:g}s), found {retry.max_backoff:g}s",
        )
    return retry


def _parse_targets(data: object, environ: Mapping[str, str]) -> Mapping[str, TargetSettings]:
    if data is None:
        raise ConfigError(
            "targets", "is required but missing: a mapping of inbox folder names to vendor settings"
        )
    if not isinstance(data, dict) or not data:
        raise _refuse("targets", "a non-empty mapping of inbox folder names to vendor settings", data)
    targets: dict[str, TargetSettings] = {}
    folded: dict[str, str] = {}
    for name, body in data.items():
        _check_target_name(name)
        # On case-insensitive shares (SMB, macOS) two such folders would be one folder.
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            raise ConfigError(f"targets.{name}", f"differs from target {other!r} only in letter case")
        targets[name] = _parse_target(name, body, environ)
    return MappingProxyType(targets)


def _check_target_name(name: object) -> None:
    """A target is a folder directly under the inbox: its name must be a plain, portable segment."""
    if not isinstance(name, str):
        raise ConfigError(f"targets.{name}", f"target names must be text, found {_found(name)} (quote it)")
    why = None
    if not name:
        why = "is empty"
    elif name in (".", ".."):
        why = "is . or .."
    elif "/" in name or "\\" in name:
        why = "contains / or \\"
    elif name.startswith("."):
        why = "starts with '.' (hidden folders are ignored by the watcher)"
    elif any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        why = "contains a control character"
    elif name != name.strip():
        why = "has leading or trailing whitespace"
    elif len(name.encode("utf-8")) > 255:
        why = "is longer than 255 bytes"
    if why:
        raise ConfigError("targets", f"target name {name!r} {why}; it must be a plain folder name")


def _parse_target(name: str, body: object, environ: Mapping[str, str]) -> TargetSettings:
    key = f"targets.{name}"
    if not isinstance(body, dict):
        raise _refuse(key, "a mapping with vendor, url and the vendor's keys", body)
    vendor = _Section({"vendor": body.get("vendor")}, key, environ, ("vendor",)).option(
        "vendor", _COMMON_TARGET_OPTIONS["vendor"]
    )
    table = VENDOR_OPTIONS[vendor]
    section = _Section(body, key, environ, (*_COMMON_TARGET_OPTIONS, *table), vendor=vendor)
    common = {
        option_name: section.option(option_name, option)
        for option_name, option in _COMMON_TARGET_OPTIONS.items()
    }
    options = {option_name: section.option(option_name, option) for option_name, option in table.items()}
    rule = VENDOR_RULES.get(vendor)
    if rule is not None:
        rule(options, key)
    return TargetSettings(
        name=name,
        vendor=vendor,
        url=common["url"],
        verify_tls=common["verify_tls"],
        timeout=common["timeout"],
        max_requests_per_second=common["max_requests_per_second"],
        max_concurrent_uploads=common["max_concurrent_uploads"],
        options=MappingProxyType(options),
    )


# --- the file ----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(raw: bytes, where: str) -> object:
    try:
        return yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        # problem/context only: str(exc) would quote the offending line, which may hold a secret.
        mark = exc.problem_mark or exc.context_mark
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise ConfigError(where, f"YAML syntax error at {place}{what}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(where, f"not valid UTF-8 text (byte offset {exc.position})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(where, f"YAML error: {type(exc).__name__}") from None


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, parse and check a config file; ``environ`` (default os.environ) fills ${VAR}.

    Errors in the file itself (missing, unreadable, bad YAML) name the file as the key.
    """
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(where, "configuration file not found") from None
    except OSError as exc:
        raise ConfigError(where, f"cannot read the configuration file: {exc.strerror or exc}") from None
    return parse_settings(_read_yaml(raw, where), os.environ if environ is None else environ)


def secret_values(settings: Settings) -> list[str]:
    """Every secret string in the settings, longest first, for the log redactor."""
    found: dict[str, None] = {}
    for target in settings.targets.values():
        for name, option in VENDOR_OPTIONS[target.vendor].items():
            value = target.options.get(name)
            if option.secret and isinstance(value, str) and value:
                found[value] = None
    # Longest first, so a secret that contains another is redacted whole.
    return sorted(found, key=len, reverse=True)
