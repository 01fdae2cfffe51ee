"""Prototype, not production: the whole config as msgspec Structs (bench/config_validation.py).

forbid_unknown_fields everywhere, msgspec.convert's strict mode (no "4" -> 4, no true -> 1),
targets a tagged union on ``vendor``. Durations, sizes, URLs and templates are marker types that
msgspec hands to ``dec_hook``. msgspec names a dict's keys ``[...]`` in its error paths
(``$.targets[...].token``), which would not say which target: so the targets are converted one by
one and the path is written with the target's name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from . import _common as common


class Duration(float): ...
class PositiveDuration(float): ...
class AutoOrDuration(float): ...
class Size(int): ...
class PositiveSize(int): ...
class AbsolutePath(str): ...
class Url(str): ...
class Template(str): ...
class Ticket(dict[str, Any]): ...


_PARSERS: dict[type, Callable[[Any], Any]] = {
    Duration: lambda v: common.duration(v, positive=False),
    PositiveDuration: lambda v: common.duration(v, positive=True),
    AutoOrDuration: lambda v: math.nan if v == "auto" else common.duration(v, positive=False),  # nan: auto
    Size: lambda v: common.size(v, positive=False),
    PositiveSize: lambda v: common.size(v, positive=True),
    AbsolutePath: lambda v: common.absolute_path(_text(v)),
    Url: lambda v: common.url(_text(v)),
    Template: lambda v: common.template(_text(v)),
    Ticket: lambda v: common.ticket(v if isinstance(v, dict) else _fail("expected a mapping of extra ticket fields")),
}


def _fail(text: str) -> Any:
    raise ValueError(text)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _fail(f"Expected `str`, got `{type(value).__name__}`")


def hook(kind: type, value: Any) -> Any:
    if kind not in _PARSERS:
        raise NotImplementedError
    return kind(_PARSERS[kind](value))  # msgspec checks that the hook returns the marker type


NonEmpty = Annotated[str, Meta(pattern=r"\S")]
Secret = Annotated[str, Meta(min_length=1)]
AtLeastOne = Annotated[int, Meta(ge=1)]


class _Section(Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Watch(_Section, kw_only=True):
    method: Literal["auto", "native", "polling"] = "auto"
    settle: Duration = Duration(5.0)
    poll_interval: PositiveDuration = PositiveDuration(2.0)
    rescan: PositiveDuration = PositiveDuration(300.0)
    ignore: list[NonEmpty] = field(default_factory=lambda: list(common.DEFAULT_IGNORE))
    check_writers: bool = True
    check_complete: bool = True
    incomplete_timeout: PositiveDuration = PositiveDuration(600.0)
    attribute_cache: AutoOrDuration | None = None


class Retry(_Section, kw_only=True):
    attempts: AtLeastOne = 8
    backoff: PositiveDuration = PositiveDuration(2.0)
    max_backoff: PositiveDuration = PositiveDuration(600.0)

    def __post_init__(self) -> None:
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff: expected at least retry.backoff")


class _Target(_Section, tag_field="vendor", kw_only=True):
    url: Url
    verify_tls: bool = True
    timeout: PositiveDuration = PositiveDuration(60.0)
    max_requests_per_second: Annotated[float, Meta(gt=0)] | None = None
    max_concurrent_uploads: AtLeastOne | None = None


class Fulcrum(_Target, tag="fulcrum", kw_only=True):
    token: Secret
    field: NonEmpty
    owner: Literal["record", "form"] = "record"
    kind: Literal["attachment", "photo"] = "attachment"
    caption: Template = Template("")
    skip_workflows: bool = False
    skip_webhooks: bool = False

    def __post_init__(self) -> None:
        if self.kind == "photo" and self.owner == "form":
            raise ValueError("owner: expected record for kind photo (photos belong to records), found form")


class FulcrumLayers(_Target, tag="fulcrum-layers", kw_only=True):
    token: Secret
    name_template: Template = Template("{stem}")


class Visibuild(_Target, tag="visibuild", kw_only=True):
    token: Secret | None = None
    client_id: NonEmpty | None = None
    client_secret: Secret | None = None
    token_url: Url | None = None
    title_template: Template = Template("{stem}")
    ticket: Ticket = field(default_factory=Ticket)

    def __post_init__(self) -> None:
        common.check_visibuild(self.token, self.client_id, self.client_secret, self.token_url)


class Saferme(_Target, tag="saferme", kw_only=True):
    token: Secret
    team_id: int | NonEmpty
    app_id: NonEmpty = "com.thundermaps.saferme"
    field: NonEmpty
    installation_id: NonEmpty | None = None
    poll_attempts: AtLeastOne = 20
    poll_interval: PositiveDuration = PositiveDuration(2.0)

    def __post_init__(self) -> None:
        self.team_id = str(self.team_id)


class Espocrm(_Target, tag="espocrm", kw_only=True):
    api_key: Secret
    secret: Secret | None = None
    entity: NonEmpty
    field: NonEmpty
    field_type: Literal["file", "attachments"]
    chunk_threshold: Size = Size(20 * 1024**2)
    chunk_size: PositiveSize = PositiveSize(4 * 1024**2)


Target = Fulcrum | FulcrumLayers | Visibuild | Saferme | Espocrm


class Config(_Section, kw_only=True):
    inbox: AbsolutePath
    done: AbsolutePath
    failed: AbsolutePath
    journal: AbsolutePath
    watch: Watch = field(default_factory=Watch)
    workers: AtLeastOne = 4
    retry: Retry = field(default_factory=Retry)
    targets: Annotated[dict[str, Any], Meta(min_length=1)]  # each converted on its own: see the docstring
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    duplicates: Literal["skip", "attach"] = "skip"
    archive_after: PositiveDuration = PositiveDuration(30 * 86400.0)

    def __post_init__(self) -> None:
        common.check_folders(self.inbox, self.done, self.failed, self.journal)


def validate(data: object, environ: dict[str, str]) -> Config:
    config = msgspec.convert(common.prepare(data, environ), Config, dec_hook=hook)
    targets: dict[str, Target] = {}
    for name, body in config.targets.items():
        try:
            common.target_name(name)
            targets[name] = msgspec.convert(body, Target, dec_hook=hook)  # type: ignore[arg-type]
        except ValueError as error:  # msgspec.ValidationError is a ValueError
            path = "`$.targets" + (f".{name}" if isinstance(error, msgspec.ValidationError) else "")
            raise msgspec.ValidationError(str(error).replace("`$", path, 1) if "`$" in str(error)
                                          else f"{error} - at {path}`") from None
    if len({name.casefold() for name in targets}) != len(targets):
        raise msgspec.ValidationError("two names differ only in letter case - at `$.targets`")
    config.targets = targets
    return config


_AT = re.compile(r"(?s)(.*) - at `\$\.?(.*)`")
_FIELD = re.compile(r"(?:missing required|unknown) field `(.+?)`")


def message(error: Exception) -> str:
    """``key.path: message``, as check-config prints; a missing or unknown field joins the path."""
    if not isinstance(error, msgspec.ValidationError):
        return str(error)
    match = _AT.fullmatch(str(error))
    text, path = match.groups() if match else (str(error), "")
    if named := _FIELD.search(text):
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return f"{path or '(top level)'}: {text}"
