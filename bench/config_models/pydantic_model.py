"""Prototype, not production: the whole config as pydantic v2 models (bench/config_validation.py).

extra="forbid" everywhere, strict=True (no "4" -> 4, no true -> 1, as the hand-written parsers),
hide_input_in_errors=True (pydantic's str(ValidationError) otherwise prints the input: a secret),
targets a discriminated union on ``vendor``. Options as hotfolder.config.VENDOR_OPTIONS has them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from . import _common as common

Duration = Annotated[float, BeforeValidator(lambda v: common.duration(v, positive=False))]
PositiveDuration = Annotated[float, BeforeValidator(lambda v: common.duration(v, positive=True))]
AutoOrDuration = Annotated[float | None, BeforeValidator(common.auto_or_duration)]
Size = Annotated[int, BeforeValidator(lambda v: common.size(v, positive=False))]
PositiveSize = Annotated[int, BeforeValidator(lambda v: common.size(v, positive=True))]
AbsolutePath = Annotated[str, AfterValidator(common.absolute_path)]
Url = Annotated[str, AfterValidator(common.url)]
Template = Annotated[str, AfterValidator(common.template)]
NonEmpty = Annotated[str, Field(pattern=r"\S")]
Secret = Annotated[SecretStr, Field(min_length=1)]
IdText = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
                   Field(min_length=1)]
AtLeastOne = Annotated[int, Field(ge=1)]
Ticket = Annotated[dict[str, Any], AfterValidator(common.ticket)]
TargetName = Annotated[str, AfterValidator(common.target_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class Watch(_Section):
    method: Literal["auto", "native", "polling"] = "auto"
    settle: Duration = 5.0
    poll_interval: PositiveDuration = 2.0
    rescan: PositiveDuration = 300.0
    ignore: list[NonEmpty] = list(common.DEFAULT_IGNORE)
    check_writers: bool = True
    check_complete: bool = True
    incomplete_timeout: PositiveDuration = 600.0
    attribute_cache: AutoOrDuration = None


class Retry(_Section):
    attempts: AtLeastOne = 8
    backoff: PositiveDuration = 2.0
    max_backoff: PositiveDuration = 600.0

    @model_validator(mode="after")
    def _order(self) -> Retry:
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff: expected at least retry.backoff")
        return self


class _Target(_Section):
    url: Url
    verify_tls: bool = True
    timeout: PositiveDuration = 60.0
    max_requests_per_second: Annotated[float, Field(gt=0)] | None = None
    max_concurrent_uploads: AtLeastOne | None = None


class Fulcrum(_Target):
    vendor: Literal["fulcrum"]
    token: Secret
    field: NonEmpty
    owner: Literal["record", "form"] = "record"
    kind: Literal["attachment", "photo"] = "attachment"
    caption: Template = ""
    skip_workflows: bool = False
    skip_webhooks: bool = False

    @model_validator(mode="after")
    def _photos_belong_to_records(self) -> Fulcrum:
        if self.kind == "photo" and self.owner == "form":
            raise ValueError("owner: expected record for kind photo (photos belong to records), found form")
        return self


class FulcrumLayers(_Target):
    vendor: Literal["fulcrum-layers"]
    token: Secret
    name_template: Template = "{stem}"


class Visibuild(_Target):
    vendor: Literal["visibuild"]
    token: Secret | None = None
    client_id: NonEmpty | None = None
    client_secret: Secret | None = None
    token_url: Url | None = None
    title_template: Template = "{stem}"
    ticket: Ticket = {}

    @model_validator(mode="after")
    def _credentials(self) -> Visibuild:
        common.check_visibuild(self.token, self.client_id, self.client_secret, self.token_url)
        return self


class Saferme(_Target):
    vendor: Literal["saferme"]
    token: Secret
    team_id: IdText
    app_id: NonEmpty = "com.thundermaps.saferme"
    field: NonEmpty
    installation_id: NonEmpty | None = None
    poll_attempts: AtLeastOne = 20
    poll_interval: PositiveDuration = 2.0


class Espocrm(_Target):
    vendor: Literal["espocrm"]
    api_key: Secret
    secret: Secret | None = None
    entity: NonEmpty
    field: NonEmpty
    field_type: Literal["file", "attachments"]
    chunk_threshold: Size = 20 * 1024**2
    chunk_size: PositiveSize = 4 * 1024**2


Target = Annotated[Fulcrum | FulcrumLayers | Visibuild | Saferme | Espocrm, Field(discriminator="vendor")]


class Config(_Section):
    inbox: AbsolutePath
    done: AbsolutePath
    failed: AbsolutePath
    journal: AbsolutePath
    watch: Watch = Watch()
    workers: AtLeastOne = 4
    retry: Retry = Retry()
    targets: Annotated[dict[TargetName, Target], Field(min_length=1)]
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    duplicates: Literal["skip", "attach"] = "skip"
    archive_after: PositiveDuration = 30 * 86400.0

    @model_validator(mode="after")
    def _folders(self) -> Config:
        common.check_folders(self.inbox, self.done, self.failed, self.journal)
        folded = {name.casefold() for name in self.targets}
        if len(folded) != len(self.targets):
            raise ValueError("targets: two names differ only in letter case")
        return self


def validate(data: object, environ: dict[str, str]) -> Config:
    return Config.model_validate(common.prepare(data, environ))


def message(error: Exception) -> str:
    """``key.path: message`` per error, as check-config prints; the key path without the union's tag."""
    if not isinstance(error, ValidationError):
        return str(error)
    lines = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        loc = list(item["loc"])
        if loc[:1] == ["targets"] and len(loc) > 2 and loc[2] in common.VENDORS:
            del loc[2]  # pydantic puts the discriminator's value in the path: targets.fulcrum.fulcrum.token
        if item["type"].startswith("union_tag"):
            loc.append("vendor")
        lines.append(f"{'.'.join(map(str, loc)) or '(top level)'}: {item['msg']}")
    return "; ".join(lines)
