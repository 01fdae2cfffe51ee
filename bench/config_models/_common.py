"""What both prototypes need beyond their library: ${VAR} substitution and the unit parsers.

A migration would keep these whichever library it chose (neither knows durations, sizes, the
vendors' URL rules or str.format templates), so the LOC figures count this file for both.
The parsers raise ValueError with the hand-written validator's wording; the library puts the key
path in front. Nothing here imports hotfolder: its import time would blur the figures.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

VENDORS = ("fulcrum", "fulcrum-layers", "visibuild", "saferme", "espocrm")
TEMPLATE_FIELDS = ("name", "stem", "suffix", "target", "record", "group")
DEFAULT_IGNORE = (".*", "*.tmp", "*.part", "*.crdownload", "~$*", "Thumbs.db", "desktop.ini", ".DS_Store", "._*",
                  "@eaDir/")
TICKET_OWN_FIELDS = ("title", "projectId", "attachmentKeys")


class PrototypeError(Exception):
    """A refusal before the library runs (an unset ${VAR}); says the key like ConfigError."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")


# --- the pass before the library: ${VAR}, and null read as absent ---------------------------------

_REFERENCE = re.compile(r"\$\{([^}]*)\}")


def _expand(value: Any, key: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str) and "${" in value:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if not re.fullmatch(r"[A-Za-z_]\w*", name):
                raise PrototypeError(key, "contains a malformed ${...} reference; expected ${NAME}")
            if name not in environ:
                raise PrototypeError(key, f"environment variable {name} is not set")
            return environ[name]

        expanded = _REFERENCE.sub(replace, value)
        if "${" in _REFERENCE.sub("", value):
            raise PrototypeError(key, "contains '${' without a closing '}'; expected ${NAME}")
        return expanded
    if isinstance(value, list):
        return [_expand(item, f"{key}[{i}]", environ) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {name: _expand(item, f"{key}.{name}" if key else str(name), environ) for name, item in value.items()}
    return value


def _present(section: Any) -> Any:
    return {k: v for k, v in section.items() if v is not None} if isinstance(section, dict) else section


def prepare(data: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Substitute ${VAR} everywhere and drop null keys of the sections (null means "the default")."""
    data = _expand(data, "", os.environ if environ is None else environ)
    if not isinstance(data, dict):
        return data
    data = _present(data)
    for section in ("watch", "retry"):
        if section in data:
            data[section] = _present(data[section])
    if isinstance(data.get("targets"), dict):
        data["targets"] = {name: _present(body) for name, body in data["targets"].items()}
    return data


# --- the values neither library knows --------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmg])(?:i?b)?|(b))?", re.IGNORECASE)


def duration(value: Any, positive: bool) -> float:
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    seconds = float(value) if number else float(match.group(1)) * _SECONDS[match.group(2)] if match else -1.0
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"expected a duration{' greater than 0' if positive else ''} such as 500ms, 5s, 2m, 1h or "
                         "30d (a bare number means seconds)")
    return seconds


def auto_or_duration(value: Any) -> float | None:
    return None if value == "auto" else duration(value, positive=False)


def size(value: Any, positive: bool) -> int:
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        amount, unit = float(value), 1
    elif match:
        amount, unit = float(match.group(1)), 1024 ** " kmg".index((match.group(2) or " ").lower())
    else:
        amount, unit = -1.0, 1
    if amount < 0 or (unit == 1 and not amount.is_integer()) or (positive and amount == 0):
        raise ValueError(f"expected a size{' greater than 0' if positive else ''} such as 512, 20KB, 4MB or 1GB")
    return int(amount * unit)


def url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", value):
        raise ValueError("expected an http:// or https:// URL of the vendor's host")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@); use the target's secret keys")
    if parts.query or parts.fragment:
        raise ValueError("expected a URL without ?query or #fragment")
    parts.port  # noqa: B018 - raises ValueError on a bad port
    path = parts.path.rstrip("/")
    if re.search(r"/api(?:/core)?(?:/v\d+)?$", path):
        raise ValueError(f"hotfolder adds the API path ({path}) itself")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def template(value: str) -> str:
    try:
        value.format_map(dict.fromkeys(TEMPLATE_FIELDS, "x"))
    except KeyError as exc:
        raise ValueError(f"unknown placeholder {{{exc.args[0]}}}; expected one of {TEMPLATE_FIELDS}") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"is not a valid template ({exc})") from None
    return value


def absolute_path(value: str) -> str:
    if not os.path.isabs(value) or "\x00" in value:
        raise ValueError("expected an absolute path (~ and relative paths are not expanded)")
    return os.path.normpath(value)


def ticket(value: dict[str, Any]) -> dict[str, Any]:
    for name in TICKET_OWN_FIELDS:
        if name in value:
            raise ValueError(f"{name} is set by hotfolder, not here")
    return value


def target_name(name: str) -> str:
    if not name or name.startswith(".") or re.search(r"[/\\\x00-\x1f\x7f-\x9f]", name) or name != name.strip():
        raise ValueError(f"target name {name!r}: it must be a plain folder name")
    return name


def check_folders(inbox: str, done: str, failed: str, journal: str) -> None:
    """The folders must not nest (the rule spanning keys that both prototypes share)."""
    def inside(a: str, b: str) -> bool:
        return a == b or a.startswith(b.rstrip("/") + "/")

    trees = {"inbox": inbox, "done": done, "failed": failed}
    names = list(trees)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if inside(trees[first], trees[second]) or inside(trees[second], trees[first]):
                raise ValueError(f"{second}: overlapping folders {first} and {second}")
    if inside(journal, inbox):
        raise ValueError("journal: must not be inside the inbox")


def check_visibuild(token: object, client_id: object, client_secret: object, token_url: object) -> None:
    if token is not None and (client_id is not None or client_secret is not None):
        raise ValueError("token: give either token or client_id with client_secret, not both")
    if token is None and (client_id is None or client_secret is None):
        raise ValueError("needs credentials: either token, or both client_id and client_secret")
    if token is not None and token_url is not None:
        raise ValueError("token_url: is only used with client_id and client_secret")
