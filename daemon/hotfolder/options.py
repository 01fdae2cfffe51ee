"""The vocabulary config options are written in: the Option type and the value parsers.

A parser is ``(value, key) -> typed value``; it raises :class:`~hotfolder.errors.ConfigError` naming
the key, what was expected and what was found. The common settings (``config``) and every vendor's
own option table (``vendors/<name>_options.py``) are written with these, so a refusal reads the same
whichever part of the file it is about. This module imports no table: both sides import it, so
neither has to import the other to share it.

Values never leak: an error shows the value of a secret key, or text that came from the environment,
only as its kind (it may be a secret pasted into a non-secret key).

Units. Durations: ``500ms``, ``5s``, ``2m``, ``1h`` or a bare number of seconds. Sizes: bytes,
or ``K``/``M``/``G`` with optional ``B`` or ``iB``; all of them are powers of 1024
(``20MB`` = ``20MiB`` = 20,971,520 bytes) because chunk sizes are what they size, and a
decimal megabyte there would only surprise.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hotfolder.errors import ConfigError

# Placeholders a name/title/caption template may use; adapters fill every one of them
# (an absent record or group is ""). Checked at load so a typo fails now, not at upload.
TEMPLATE_FIELDS: tuple[str, ...] = ("name", "stem", "suffix", "target", "record", "group")


# --- describing values without leaking them ---------------------------------------------------------


class FromEnv(str):
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


def found(value: object, secret: bool = False) -> str:
    """What was found, for an error message: the value itself only when it is safe to show."""
    if value is None or isinstance(value, list | tuple | Mapping):
        return _kind(value)
    if secret:
        return f"{_kind(value)} (a secret: value not shown)"
    if isinstance(value, FromEnv):
        return f"{_kind(value)} from the environment (value not shown)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, int | float):
        return f"{_kind(value)} {value!r}"
    return _kind(value)


def refuse(key: str, expected: str, value: object, secret: bool = False) -> ConfigError:
    return ConfigError(key, f"expected {expected}, found {found(value, secret)}")


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
        raise refuse(key, expected, value)
    if not math.isfinite(seconds) or seconds < 0:
        raise refuse(key, expected, value)
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
        raise refuse(key, expected, value)
    size = number * multiplier
    # A fraction of a byte is a typo, not a size; fractions of a unit (1.5GB) are fine.
    if not math.isfinite(size) or size < 0 or (multiplier == 1 and not number.is_integer()):
        raise refuse(key, expected, value)
    return int(size)


# --- value parsers: (value, key) -> typed value ------------------------------------------------

Parser = Callable[[object, str], Any]


def text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise refuse(key, "text", value)
    return str(value)  # drop the FromEnv marker: settings hold plain str


def nonempty_text(value: object, key: str) -> str:
    written = text(value, key)
    if not written.strip():
        raise ConfigError(key, "expected non-empty text, found empty text")
    return written


def secret_text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise refuse(key, "text", value, secret=True)
    if not value.strip():
        raise ConfigError(key, "is empty (if it comes from ${VAR}, that variable is set but empty)")
    return str(value)


def id_text(value: object, key: str) -> str:
    # Ids written bare in YAML arrive as integers; they are identifiers, so keep them as text.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return nonempty_text(value, key)


def boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise refuse(key, "true or false", value)
    return value


def integer(minimum: int) -> Parser:
    def parse(value: object, key: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise refuse(key, f"a whole number of at least {minimum}", value)
        return value

    return parse


def positive_number(value: object, key: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]
        raise refuse(key, "a number greater than 0", value)
    return float(value)  # type: ignore[arg-type]


def choice(*choices: str) -> Parser:
    def parse(value: object, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise refuse(key, f"one of {', '.join(choices)}", value)
        return str(value)

    return parse


def _amount(parse_amount: Parser, noun: str, *, positive: bool) -> Parser:
    """``parse_amount`` (never negative), refusing 0 as well when ``positive``."""

    def parse(value: object, key: str) -> Any:
        amount = parse_amount(value, key)
        if positive and amount <= 0:
            raise refuse(key, f"a {noun} greater than 0", value)
        return amount

    return parse


def duration(*, positive: bool) -> Parser:
    return _amount(parse_duration, "duration", positive=positive)


def auto_or_duration(value: object, key: str) -> float | None:
    """``auto`` (None: the program finds the figure) or a duration of 0 or more."""
    if value == "auto":
        return None
    if _is_number(value) or (isinstance(value, str) and _DURATION.fullmatch(value.strip())):
        return parse_duration(value, key)
    raise refuse(key, "auto, or a duration such as 1s or 20s", value)


def size(*, positive: bool) -> Parser:
    return _amount(parse_size, "size", positive=positive)


def template(value: object, key: str) -> str:
    """A str.format template over TEMPLATE_FIELDS, tried once with dummy values to catch typos."""
    written = text(value, key)
    sample = dict.fromkeys(TEMPLATE_FIELDS, "x")
    known = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    try:
        written.format_map(sample)
    except KeyError as exc:
        raise ConfigError(key, f"unknown placeholder {{{exc.args[0]}}}; expected one of {known}") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ConfigError(
            key, f"is not a valid template ({exc}); use {known} and write literal braces as {{{{ and }}}}"
        ) from None
    return written


def patterns(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise refuse(key, "a list of file name patterns", value)
    return tuple(nonempty_text(item, f"{key}[{index}]") for index, item in enumerate(value))


# host:port, the host a name, an IPv4 address or a bracketed IPv6 address; the port 0-65535 (0: any free one).
LISTEN_PORT = r"(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|\d{1,4})"
LISTEN_ADDRESS = rf"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):{LISTEN_PORT}$"
_LISTEN_ADDRESS = re.compile(LISTEN_ADDRESS)


def listen_address(value: object, key: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8765`` for IPv6) as (host, port); the brackets are dropped."""
    written = nonempty_text(value, key)
    if not _LISTEN_ADDRESS.match(written):
        raise refuse(key, "host:port, such as 127.0.0.1:8765 or [::1]:8765", value)
    host, _, port = written.rpartition(":")
    return host.strip("[]"), int(port)


def host_names(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise refuse(key, "a list of host names", value)
    return tuple(nonempty_text(item, f"{key}[{index}]").lower() for index, item in enumerate(value))


def absolute_path(value: object, key: str) -> Path:
    written = nonempty_text(value, key)
    if "\x00" in written:
        raise ConfigError(key, "expected an absolute path, found text with a NUL character")
    if not os.path.isabs(written):
        raise refuse(key, "an absolute path (~ and relative paths are not expanded)", value)
    # Lexical normalisation only: the folders need not exist yet, so nothing is resolved.
    return Path(os.path.normpath(written))


DATABASE_SCHEMES = ("postgresql", "postgres")


def journal_location(value: object, key: str) -> Path | str:
    """An absolute path (the SQLite journal), or a ``postgresql://user@host:port/db`` URL (the journal
    shared by several daemons); a password may be in the URL (as ${NAME}) or in the user's .pgpass."""
    written = nonempty_text(value, key)
    scheme = written.partition("://")[0].lower()
    if "://" not in written or scheme not in DATABASE_SCHEMES:
        return absolute_path(value, key)
    try:
        parts = urllib.parse.urlsplit(written)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise ConfigError(key, "expected postgresql://user@host:port/database; the URL cannot be read") from None
    if not parts.hostname or not parts.path.strip("/"):
        raise ConfigError(key, "expected postgresql://user@host:port/database: the host and the database are needed")
    return written


def shown_database_url(location: str) -> str:
    """The URL without its password, for logs and ``status``."""
    parts = urllib.parse.urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:[redacted]@{netloc[2]}"))


def database_password(location: str) -> str | None:
    return urllib.parse.unquote(urllib.parse.urlsplit(location).password or "") or None


# A URL path ending like this is the vendor's API root pasted in; adapters add it themselves.
_API_PATH = re.compile(r"/api(?:/core)?(?:/v\d+)?$")


def http_url_parts(value: object, key: str, expected: str, credentials: str) -> urllib.parse.SplitResult:
    """``value`` as an http(s) URL with a host and a valid port, and no user:password@ (``credentials``
    says where they go instead); the refusals show ``expected``."""
    written = nonempty_text(value, key)
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in written):
        raise refuse(key, expected, value)
    parts = urllib.parse.urlsplit(written)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(key, expected, value)
    if "@" in parts.netloc:
        # Never echoed: this is where a password would be.
        raise ConfigError(key, f"must not carry credentials (user:password@); {credentials}")
    try:
        parts.port  # noqa: B018 - evaluated for its check: a bad port raises here
    except ValueError:
        raise refuse(key, f"{expected}, with a valid port", value) from None
    return parts


def url(value: object, key: str) -> str:
    expected = "an http:// or https:// URL of the vendor's host, such as https://api.fulcrumapp.com"
    parts = http_url_parts(value, key, expected, "use the target's secret keys")
    if parts.query or parts.fragment:
        raise refuse(key, f"{expected}, without ?query or #fragment", value)
    path = parts.path.rstrip("/")
    if _API_PATH.search(path):
        raise refuse(key, f"{expected}; hotfolder adds the API path ({path}) itself", value)
    # A path prefix is kept (a reverse proxy, EspoCRM in a sub-folder); the trailing slash is not.
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


# --- free-form values (a ticket's extra fields) ---------------------------------------------------


def json_value(value: object, key: str) -> Any:
    """Free-form JSON-like YAML, frozen; dates and other YAML-only types are refused."""
    if value is None or isinstance(value, str | bool | int):
        return str(value) if isinstance(value, str) else value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list):
        return tuple(json_value(item, f"{key}[{index}]") for index, item in enumerate(value))
    if isinstance(value, dict):
        return MappingProxyType(
            {_field_name(name, key): json_value(v, f"{key}.{name}") for name, v in value.items()}
        )
    raise refuse(key, "text, a number, a boolean, a list or a mapping (quote dates)", value)


def _field_name(name: object, parent: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{parent}.{name}", f"field names must be non-empty text, found {found(name)}")
    return name


# --- an option -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One key of a table. ``default`` is written as in YAML and goes through ``parse``."""

    parse: Parser
    required: bool = False
    default: object = None
    secret: bool = False  # its value is never shown, and the log redacts it (vendors.SECRET_KEYS)


def required(parse: Parser) -> Option:
    return Option(parse, required=True)


def secret(*, required: bool = False) -> Option:
    """A credential: text that must not be blank, never shown in an error, redacted from the logs."""
    return Option(secret_text, required=required, secret=True)
