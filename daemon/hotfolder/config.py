"""Settings: the YAML file read once, checked whole, and handed out frozen.

Theory of operation
-------------------
The raw YAML tree is walked once. Every mapping is read through a :class:`_Section` that
knows its dotted key (``targets.fulcrum.token``), refuses keys it does not know, and hands
each value to a small parser ``(value, key) -> typed value`` (``hotfolder.options``). So every
refusal is a :class:`~hotfolder.errors.ConfigError` naming the key, what was expected and what
was found, and nothing half-checked ever reaches the daemon.

Vendor options are data, not code, and each vendor owns its own: the registry
(:mod:`hotfolder.vendors`) hands out, per vendor, the table of its keys (parser, required,
default, secret) and the rule that spans keys (Visibuild's two credential forms), declared beside
its adapter in ``vendors/<name>_options.py``. This module knows only the keys every target has.

Secrets. ``${VAR}`` in any string value is replaced from the environment when that value is
read. Error messages never show the value of a secret key, nor any text that came from the
environment (it may be a secret pasted into a non-secret key); they name the key and the
variable instead. :func:`secret_values` lists every secret so the logger can redact it.

Units (durations, sizes) are described in :mod:`hotfolder.options`.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import socket
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from hotfolder.alerts.options import (
    EMAIL_OPTIONS,
    NOTIFY_CHANNELS,
    NOTIFY_OPTIONS,
    WEBHOOK_OPTIONS,
    NotifySettings,
    notify_settings,
)
from hotfolder.errors import ConfigError
from hotfolder.options import (
    FromEnv,
    Option,
    Parser,
    absolute_path,
    auto_or_duration,
    boolean,
    choice,
    database_password,
    duration,
    found,
    host_names,
    integer,
    journal_location,
    listen_address,
    nonempty_text,
    patterns,
    positive_number,
    refuse,
    required,
    url,
)
from hotfolder.vendors import REGISTRY, VENDOR_OPTIONS, VENDORS

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

WATCH_METHODS: tuple[str, ...] = ("auto", "native", "polling")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
DUPLICATE_POLICIES: tuple[str, ...] = ("skip", "attach")


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
class HttpSettings:
    """The status page, metrics and health endpoint (off unless the config has an ``http`` section)."""

    listen: tuple[str, int]  # (host, port)
    token_file: Path | None  # None: beside the journal (http_token_file)
    allowed_hosts: tuple[str, ...]  # Host header names accepted besides the listen address and loopback
    stuck_after: float  # a step without progress this long makes /healthz fail
    paused_limit: float  # a target paused this long makes /readyz fail


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
class NodeSettings:
    """This daemon among several sharing one PostgreSQL journal (unused with a SQLite journal)."""

    name: str  # unique per running daemon; its leases and its line in `hotfolder status`
    lease: float  # seconds a claimed job stays this node's without a renewal
    state: Path  # this node's own files (the list of files not ready yet)


@dataclass(frozen=True)
class Settings:
    inbox: Path
    done: Path
    failed: Path
    journal: Path | str  # a SQLite file, or a postgresql:// URL (``shared_journal``)
    watch: WatchSettings
    workers: int
    retry: RetrySettings
    targets: Mapping[str, TargetSettings]
    log_level: str
    duplicates: str
    archive_after: float  # seconds after which a finished job moves to the journal's archive
    node: NodeSettings
    notify: NotifySettings | None = None  # alerts by webhook and email (hotfolder.alerts); None: off
    http: HttpSettings | None = None  # None: no HTTP endpoint

    @property
    def shared_journal(self) -> str | None:
        """The PostgreSQL URL when the journal is shared by several daemons; None for a SQLite file."""
        return self.journal if isinstance(self.journal, str) else None

    def own_file(self, suffix: str) -> Path:
        """A file of this daemon's own (the waiting list, the live state, the alerts' outbox): beside a
        SQLite journal, or in the node's state folder when the journal is shared (each node its own)."""
        if isinstance(self.journal, Path):
            return self.journal.with_name(self.journal.name + suffix)
        return self.node.state / f"{self.node.name}{suffix}"


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
    return FromEnv("".join(pieces) + rest)


def _expand(value: object, key: str, environ: Mapping[str, str]) -> object:
    """Substitute ${VAR} in every string inside ``value`` (lists and mappings included)."""
    if isinstance(value, str):
        return _expand_text(value, key, environ)
    if isinstance(value, list):
        return [_expand(item, f"{key}[{index}]", environ) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {name: _expand(item, f"{key}.{name}", environ) for name, item in value.items()}
    return value


# --- the keys every target has, whatever its vendor (the vendor's own come from its table) ----------

_COMMON_TARGET_OPTIONS: Mapping[str, Option] = MappingProxyType(
    {
        "vendor": required(choice(*VENDORS)),
        "url": required(url),
        "verify_tls": Option(boolean, default=True),
        "timeout": Option(duration(positive=True), default="60s"),
        "max_requests_per_second": Option(positive_number),
        "max_concurrent_uploads": Option(integer(1)),
    }
)


# --- reading mappings --------------------------------------------------------------------------

_REQUIRED = object()  # sentinel default: the key must be present


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
            raise refuse(key or "(top level)", "a mapping", data)
        known = tuple(known)
        for name in data:
            if not isinstance(name, str):
                hint = (
                    " (YAML reads yes/no/on/off as booleans: quote the key)" if isinstance(name, bool) else ""
                )
                raise ConfigError(_key_path(key, name), f"keys must be text, found {found(name)}{hint}")
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
    "notify",
    "node",
    "http",
)


def parse_settings(data: object, environ: Mapping[str, str]) -> Settings:
    """Check a parsed YAML tree and build the frozen settings; the first problem raises ConfigError."""
    if data is None:
        raise ConfigError(
            "(top level)", "the configuration is empty; expected inbox, done, failed, journal, targets"
        )
    top = _Section(data, "", environ, _TOP_KEYS)
    folders = {name: top.get(name, absolute_path, _REQUIRED) for name in ("inbox", "done", "failed")}
    journal = top.get("journal", journal_location, _REQUIRED)
    _check_folders(folders, journal)
    return Settings(
        inbox=folders["inbox"],
        done=folders["done"],
        failed=folders["failed"],
        journal=journal,
        watch=_parse_watch(top.data.get("watch"), environ),
        workers=top.get("workers", integer(1), 4),
        retry=_parse_retry(top.data.get("retry"), environ),
        targets=_parse_targets(top.data.get("targets"), environ),
        log_level=top.get("log_level", choice(*LOG_LEVELS), "info"),
        duplicates=top.get("duplicates", choice(*DUPLICATE_POLICIES), "skip"),
        archive_after=top.get("archive_after", duration(positive=True), "30d"),
        node=_parse_node(top.data.get("node"), environ),
        notify=_parse_notify(top.data.get("notify"), environ),
        http=_parse_http(top.data.get("http"), environ),
    )


def _parse_node(data: object, environ: Mapping[str, str]) -> NodeSettings:
    section = _Section(data, "node", environ, ("name", "lease", "state"))
    node = NodeSettings(
        name=section.get("name", nonempty_text, socket.gethostname()),
        lease=section.get("lease", duration(positive=True), "30s"),
        state=section.get("state", absolute_path, "/var/lib/hotfolder"),
    )
    if node.lease < 3:
        raise ConfigError("node.lease", f"expected at least 3s (renewed every third of it), found {node.lease:g}s")
    return node


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_folders(folders: Mapping[str, Path], journal: Path | str) -> None:
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
    if isinstance(journal, str):
        return  # a database, not a file
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
        method=section.get("method", choice(*WATCH_METHODS), "auto"),
        settle=section.get("settle", duration(positive=False), "5s"),
        poll_interval=section.get("poll_interval", duration(positive=True), "2s"),
        rescan=section.get("rescan", duration(positive=True), "5m"),
        ignore=section.get("ignore", patterns, DEFAULT_IGNORE),
        check_writers=section.get("check_writers", boolean, True),
        check_complete=section.get("check_complete", boolean, True),
        incomplete_timeout=section.get("incomplete_timeout", duration(positive=True), "10m"),
        attribute_cache=section.get("attribute_cache", auto_or_duration, "auto"),
    )


def _parse_retry(data: object, environ: Mapping[str, str]) -> RetrySettings:
    section = _Section(data, "retry", environ, ("attempts", "backoff", "max_backoff"))
    retry = RetrySettings(
        attempts=section.get("attempts", integer(1), 8),
        backoff=section.get("backoff", duration(positive=True), "2s"),
        max_backoff=section.get("max_backoff", duration(positive=True), "10m"),
    )
    if retry.max_backoff < retry.backoff:
        raise ConfigError(
            "retry.max_backoff",
            f"expected at least retry.backoff ({retry.backoff:g}s), found {retry.max_backoff:g}s",
        )
    return retry


def _parse_http(data: object, environ: Mapping[str, str]) -> HttpSettings | None:
    if data is None:
        return None  # absent, or every key commented out: no endpoint
    section = _Section(data, "http", environ, ("listen", "token_file", "allowed_hosts", "stuck_after", "paused_limit"))
    return HttpSettings(
        listen=section.get("listen", listen_address, "127.0.0.1:8765"),
        token_file=section.get("token_file", absolute_path),
        allowed_hosts=section.get("allowed_hosts", host_names, ()),
        stuck_after=section.get("stuck_after", duration(positive=True), "10m"),
        paused_limit=section.get("paused_limit", duration(positive=True), "1h"),
    )


def http_token_file(settings: Settings) -> Path:
    """Where the status page's token is kept: ``http.token_file``, else beside the journal."""
    if settings.http is not None and settings.http.token_file is not None:
        return settings.http.token_file
    return settings.journal.with_name(settings.journal.name + ".http-token")


def _parse_targets(data: object, environ: Mapping[str, str]) -> Mapping[str, TargetSettings]:
    if data is None:
        raise ConfigError(
            "targets", "is required but missing: a mapping of inbox folder names to vendor settings"
        )
    if not isinstance(data, dict) or not data:
        raise refuse("targets", "a non-empty mapping of inbox folder names to vendor settings", data)
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
        raise ConfigError(f"targets.{name}", f"target names must be text, found {found(name)} (quote it)")
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
        raise refuse(key, "a mapping with vendor, url and the vendor's keys", body)
    vendor = _Section({"vendor": body.get("vendor")}, key, environ, ("vendor",)).option(
        "vendor", _COMMON_TARGET_OPTIONS["vendor"]
    )
    spec = REGISTRY[vendor]
    table = spec.options
    section = _Section(body, key, environ, (*_COMMON_TARGET_OPTIONS, *table), vendor=vendor)
    common = {
        option_name: section.option(option_name, option)
        for option_name, option in _COMMON_TARGET_OPTIONS.items()
    }
    options = {option_name: section.option(option_name, option) for option_name, option in table.items()}
    if spec.rule is not None:
        spec.rule(options, key)
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


def _read_table(data: object, key: str, environ: Mapping[str, str], table: Mapping[str, Option]) -> dict[str, Any]:
    section = _Section(data, key, environ, table)
    return {name: section.option(name, option) for name, option in table.items()}


def _parse_notify(data: object, environ: Mapping[str, str]) -> NotifySettings | None:
    """The alerts' section (its keys are declared in hotfolder.alerts.options); absent or null: no alerts."""
    if data is None:
        return None
    section = _Section(data, "notify", environ, (*NOTIFY_OPTIONS, *NOTIFY_CHANNELS))
    common = {name: section.option(name, option) for name, option in NOTIFY_OPTIONS.items()}
    hooks = section.data.get("webhooks")
    if hooks is None:
        hooks = []
    if not isinstance(hooks, list):
        raise refuse("notify.webhooks", "a list of webhooks, each a mapping with url", hooks)
    webhooks = [_read_table(hook, f"notify.webhooks[{index}]", environ, WEBHOOK_OPTIONS)
                for index, hook in enumerate(hooks)]
    email = section.data.get("email")
    return notify_settings(
        common, webhooks, None if email is None else _read_table(email, "notify.email", environ, EMAIL_OPTIONS)
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
    secrets: dict[str, None] = {}
    for target in settings.targets.values():
        for name, option in REGISTRY[target.vendor].options.items():
            value = target.options.get(name)
            if option.secret and isinstance(value, str) and value:
                secrets[value] = None
    if settings.notify is not None:
        secrets.update(dict.fromkeys(settings.notify.secrets()))
    password = database_password(settings.shared_journal or "")
    if password:
        secrets[password] = None
    # Longest first, so a secret that contains another is redacted whole.
    return sorted(secrets, key=len, reverse=True)
