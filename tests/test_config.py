"""hotfolder.config: the documented shape loads; every rule refuses with the key named; secrets stay secret."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from hotfolder.config import DEFAULT_IGNORE, Settings, load_settings, parse_settings, secret_values
from hotfolder.errors import ConfigError
from hotfolder.options import parse_duration, parse_size
from hotfolder.vendors import SECRET_KEYS, VENDOR_OPTIONS

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-VALUE-never-shown"
ENV = {
    "FULCRUM_API_TOKEN": SECRET,
    "VISIBUILD_CLIENT_ID": "client-id",
    "VISIBUILD_CLIENT_SECRET": SECRET + "-vb",
    "SAFERME_ACCESS_TOKEN": SECRET + "-sm",
    "ESPOCRM_API_KEY": SECRET + "-ek",
    "ESPOCRM_HMAC_SECRET": SECRET + "-eh",
}

BRIEF_SHAPE = """\
inbox: /srv/scans/inbox          # layout: inbox/<target>/<record-id>/<file>
done: /srv/scans/done
failed: /srv/scans/failed
journal: /var/lib/hotfolder/journal.db
watch:
  method: auto                   # auto | native | polling
  settle: 5s
  poll_interval: 2s
  rescan: 5m
workers: 4
retry:
  attempts: 8
  backoff: 2s
  max_backoff: 10m
targets:
  fulcrum:
    vendor: fulcrum
    url: https://api.fulcrumapp.com
    token: ${FULCRUM_API_TOKEN}
    field: "6ca0"
"""

MINIMAL_TARGETS: dict[str, dict[str, Any]] = {
    "fulcrum": {
        "vendor": "fulcrum",
        "url": "https://api.fulcrumapp.com",
        "token": "${FULCRUM_API_TOKEN}",
        "field": "6ca0",
    },
    "layers": {
        "vendor": "fulcrum-layers",
        "url": "https://api.fulcrumapp.com",
        "token": "${FULCRUM_API_TOKEN}",
    },
    "visibuild": {
        "vendor": "visibuild",
        "url": "https://app.visibuild.com.au",
        "token": "${FULCRUM_API_TOKEN}",
    },
    "saferme": {
        "vendor": "saferme",
        "url": "https://api.safer.me",
        "token": "${FULCRUM_API_TOKEN}",
        "team_id": 42,
        "field": "photos",
    },
    "espocrm": {
        "vendor": "espocrm",
        "url": "https://crm.example.com",
        "api_key": "${FULCRUM_API_TOKEN}",
        "entity": "Document",
        "field": "file",
        "field_type": "file",
    },
}


def base() -> dict[str, Any]:
    return {
        "inbox": "/srv/in",
        "done": "/srv/done",
        "failed": "/srv/failed",
        "journal": "/var/lib/hotfolder/journal.db",
        "targets": copy.deepcopy(MINIMAL_TARGETS),
    }


def parse(data: object, env: dict[str, str] | None = None) -> Settings:
    return parse_settings(data, ENV if env is None else env)


def with_change(path: str, value: Any) -> dict[str, Any]:
    """base() with one dotted key set (or deleted when value is DELETE)."""
    data = base()
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


DELETE = object()


# --- what loads ------------------------------------------------------------------------------------


def test_brief_shape_loads_as_is(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BRIEF_SHAPE)
    settings = load_settings(path, {"FULCRUM_API_TOKEN": SECRET})
    assert settings.inbox == Path("/srv/scans/inbox")
    assert settings.journal == Path("/var/lib/hotfolder/journal.db")
    assert (
        settings.watch.method,
        settings.watch.settle,
        settings.watch.poll_interval,
        settings.watch.rescan,
    ) == (
        "auto",
        5.0,
        2.0,
        300.0,
    )
    assert settings.watch.ignore == DEFAULT_IGNORE
    assert (settings.retry.attempts, settings.retry.backoff, settings.retry.max_backoff) == (8, 2.0, 600.0)
    assert (settings.workers, settings.log_level, settings.duplicates) == (4, "info", "skip")
    target = settings.targets["fulcrum"]
    assert (target.vendor, target.url, target.verify_tls, target.timeout) == (
        "fulcrum",
        "https://api.fulcrumapp.com",
        True,
        60.0,
    )
    assert target.option("token") == SECRET
    assert target.option("field") == "6ca0"
    assert (target.option("owner"), target.option("kind"), target.option("caption")) == (
        "record",
        "attachment",
        "",
    )
    assert target.option("skip_workflows") is False
    assert secret_values(settings) == [SECRET]


def test_defaults_when_sections_are_absent() -> None:
    settings = parse(base())
    assert settings.watch.ignore == DEFAULT_IGNORE
    assert settings.workers == 4
    assert settings.retry.attempts == 8
    saferme = settings.targets["saferme"]
    assert saferme.option("team_id") == "42"
    assert saferme.option("app_id") == "com.thundermaps.saferme"
    assert (saferme.option("poll_attempts"), saferme.option("poll_interval")) == (20, 2.0)
    assert saferme.option("installation_id") is None
    espocrm = settings.targets["espocrm"]
    assert (espocrm.option("chunk_threshold"), espocrm.option("chunk_size")) == (20 * 1024**2, 4 * 1024**2)
    assert espocrm.option("secret") is None
    assert settings.targets["layers"].option("name_template") == "{stem}"
    assert settings.targets["visibuild"].option("ticket") == {}


def test_settings_are_frozen() -> None:
    settings = parse(base())
    with pytest.raises(AttributeError):
        settings.workers = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.targets["x"] = settings.targets["fulcrum"]  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.targets["fulcrum"].options["token"] = "other"  # type: ignore[index]


def test_option_outside_the_vendor_table_raises() -> None:
    with pytest.raises(KeyError, match="no option 'tokn'"):
        parse(base()).targets["fulcrum"].option("tokn")


@pytest.mark.parametrize(
    ("path", "value", "attribute", "expected"),
    [
        ("watch.ignore", ["*.bak"], "watch.ignore", ("*.bak",)),
        ("watch.ignore", [], "watch.ignore", ()),
        ("watch.method", "polling", "watch.method", "polling"),
        ("watch.settle", 0, "watch.settle", 0.0),
        ("watch.attribute_cache", "3s", "watch.attribute_cache", 3.0),
        ("watch.attribute_cache", "auto", "watch.attribute_cache", None),
        ("watch", None, "watch.attribute_cache", None),
        ("workers", 1, "workers", 1),
        ("log_level", "debug", "log_level", "debug"),
        ("duplicates", "attach", "duplicates", "attach"),
        ("watch", None, "watch.rescan", 300.0),  # a section with everything commented out
        ("inbox", "/srv/x/../in/", "inbox", Path("/srv/in")),
    ],
)
def test_accepted_values(path: str, value: Any, attribute: str, expected: Any) -> None:
    settings: Any = parse(with_change(path, value))
    for part in attribute.split("."):
        settings = getattr(settings, part)
    assert settings == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.fulcrumapp.com/", "https://api.fulcrumapp.com"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("https://crm.example.com/espo/", "https://crm.example.com/espo"),
        ("HTTPS://Api.Example.com", "https://Api.Example.com"),
    ],
)
def test_url_normalised(url: str, expected: str) -> None:
    assert parse(with_change("targets.fulcrum.url", url)).targets["fulcrum"].url == expected


def test_target_common_keys() -> None:
    data = base()
    data["targets"]["fulcrum"].update(
        verify_tls=False, timeout="90s", max_requests_per_second=0.5, max_concurrent_uploads=2
    )
    target = parse(data).targets["fulcrum"]
    assert (
        target.verify_tls,
        target.timeout,
        target.max_requests_per_second,
        target.max_concurrent_uploads,
    ) == (
        False,
        90.0,
        0.5,
        2,
    )


def test_environment_substitution_inside_text_and_nested_values() -> None:
    data = base()
    data["inbox"] = "${ROOT}/in"
    data["targets"]["visibuild"]["ticket"] = {"description": "from ${WHO}", "tags": ["${WHO}", 3]}
    settings = parse(data, {**ENV, "ROOT": "/data", "WHO": "scanner"})
    assert settings.inbox == Path("/data/in")
    ticket = settings.targets["visibuild"].option("ticket")
    assert ticket == {"description": "from scanner", "tags": ("scanner", 3)}
    assert type(settings.targets["fulcrum"].option("token")) is str  # no marker subclass leaks out


def test_visibuild_client_credentials() -> None:
    data = base()
    data["targets"]["visibuild"] = {
        "vendor": "visibuild",
        "url": "https://app.visibuild.com.au",
        "client_id": "${VISIBUILD_CLIENT_ID}",
        "client_secret": "${VISIBUILD_CLIENT_SECRET}",
        "token_url": "https://auth.example.com/oauth/token",
    }
    target = parse(data).targets["visibuild"]
    assert (target.option("token"), target.option("client_id")) == (None, "client-id")
    assert target.option("token_url") == "https://auth.example.com/oauth/token"


def test_example_file_loads_with_env_vars_set() -> None:
    settings = load_settings(REPO / "config.example.yaml", ENV)
    vendors = {target.vendor for target in settings.targets.values()}
    assert vendors == {"fulcrum", "fulcrum-layers", "visibuild", "saferme", "espocrm"}
    visibuild = next(t for t in settings.targets.values() if t.vendor == "visibuild")
    assert visibuild.option("client_id") == "client-id" and visibuild.option("token") is None
    assert set(secret_values(settings)) == {
        value for name, value in ENV.items() if name != "VISIBUILD_CLIENT_ID"
    }


def test_example_file_names_the_missing_variable() -> None:
    env = {name: value for name, value in ENV.items() if name != "SAFERME_ACCESS_TOKEN"}
    with pytest.raises(ConfigError) as caught:
        load_settings(REPO / "config.example.yaml", env)
    assert caught.value.key == "targets.saferme.token"
    assert "SAFERME_ACCESS_TOKEN is not set" in caught.value.message


def test_secret_values_longest_first_without_duplicates() -> None:
    data = base()
    data["targets"]["espocrm"]["secret"] = "${FULCRUM_API_TOKEN}-longer"
    assert secret_values(parse(data)) == [SECRET + "-longer", SECRET]


def test_every_secret_named_key_is_marked_secret() -> None:
    for vendor, table in VENDOR_OPTIONS.items():
        for name, option in table.items():
            assert option.secret == (name in SECRET_KEYS), f"{vendor}.{name}"


# --- units -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("30d", 30 * 86400.0),
        ("1.5s", 1.5),
        (" 3 s ", 3.0),
        ("7", 7.0),
        (7, 7.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value, "watch.settle") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["5 sec", "5S", "-1s", "1w", "", "s", True, None, [5], float("inf"), float("nan"), -3]
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "watch.settle")
    assert caught.value.key == "watch.settle"
    assert "duration" in caught.value.message


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512", 512),
        (512, 512),
        ("512B", 512),
        ("20KB", 20 * 1024),
        ("20K", 20 * 1024),
        ("20KiB", 20 * 1024),
        ("20MB", 20 * 1024**2),
        ("20mib", 20 * 1024**2),
        ("1GB", 1024**3),
        ("1.5GB", 1024**3 * 3 // 2),
        ("0", 0),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value, "targets.espocrm.chunk_size") == size


@pytest.mark.parametrize("value", ["1TB", "20 megabytes", "1.5", "-1", "MB", True, 1.5, None])
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_size(value, "targets.espocrm.chunk_size")
    assert caught.value.key == "targets.espocrm.chunk_size"
    assert "size" in caught.value.message


# --- what is refused, and the key each refusal names ------------------------------------------------

REFUSED: list[tuple[str, Any, str, str]] = [
    # (dotted key to change, new value, key the error must name, words the message must contain)
    ("extra", 1, "extra", "unknown key"),
    ("workres", 2, "workres", "did you mean 'workers'"),
    ("watch.setle", "5s", "watch.setle", "did you mean 'settle'"),
    ("watch.attribute_cache", "forever", "watch.attribute_cache", "auto, or a duration"),
    ("watch.attribute_cache", -1, "watch.attribute_cache", "a duration"),
    ("retry.tries", 3, "retry.tries", "unknown key"),
    ("targets.fulcrum.tokn", "x", "targets.fulcrum.tokn", "did you mean 'token'"),
    ("targets.layers.field", "x", "targets.layers.field", "option of fulcrum, saferme, espocrm"),
    ("inbox", DELETE, "inbox", "required"),
    ("done", DELETE, "done", "required"),
    ("failed", DELETE, "failed", "required"),
    ("journal", DELETE, "journal", "required"),
    ("targets", DELETE, "targets", "required"),
    ("targets", {}, "targets", "non-empty mapping"),
    ("targets", ["fulcrum"], "targets", "mapping"),
    ("inbox", "srv/in", "inbox", "absolute path"),
    ("journal", "journal.db", "journal", "absolute path"),
    ("done", "~/done", "done", "absolute path"),
    ("inbox", 5, "inbox", "text"),
    ("done", "/srv/in", "done", "overlapping folders"),
    ("done", "/srv/in/done", "done", "overlapping folders"),
    ("failed", "/srv", "failed", "overlapping folders"),
    ("failed", "/srv/done/failed", "failed", "overlapping folders"),
    ("journal", "/srv/in/journal.db", "journal", "inside the inbox"),
    ("journal", "/srv/done", "journal", "differ from the done folder"),
    ("watch", [], "watch", "mapping"),
    ("watch.method", "inotify", "watch.method", "one of auto, native, polling"),
    ("watch.settle", "soon", "watch.settle", "duration"),
    ("watch.poll_interval", 0, "watch.poll_interval", "greater than 0"),
    ("watch.rescan", "-5m", "watch.rescan", "duration"),
    ("watch.ignore", "*.tmp", "watch.ignore", "list"),
    ("watch.ignore", ["ok", ""], "watch.ignore[1]", "non-empty"),
    ("workers", 0, "workers", "at least 1"),
    ("workers", "4", "workers", "whole number"),
    ("workers", 2.0, "workers", "whole number"),
    ("workers", True, "workers", "whole number"),
    ("retry.attempts", 0, "retry.attempts", "at least 1"),
    ("retry.attempts", 1.5, "retry.attempts", "whole number"),
    ("retry.backoff", "0s", "retry.backoff", "greater than 0"),
    ("retry.max_backoff", "1s", "retry.max_backoff", "at least retry.backoff"),
    ("log_level", "verbose", "log_level", "debug, info, warning, error"),
    ("log_level", "INFO", "log_level", "one of"),
    ("duplicates", "replace", "duplicates", "skip, attach"),
    ("targets.fulcrum", "fulcrum", "targets.fulcrum", "mapping"),
    ("targets.fulcrum.vendor", DELETE, "targets.fulcrum.vendor", "required"),
    ("targets.fulcrum.vendor", "dropbox", "targets.fulcrum.vendor", "one of fulcrum, fulcrum-layers"),
    ("targets.fulcrum.url", DELETE, "targets.fulcrum.url", "required"),
    ("targets.fulcrum.url", "ftp://api.fulcrumapp.com", "targets.fulcrum.url", "http"),
    ("targets.fulcrum.url", "api.fulcrumapp.com", "targets.fulcrum.url", "http"),
    ("targets.fulcrum.url", "https://", "targets.fulcrum.url", "http"),
    ("targets.fulcrum.url", "https://api.fulcrumapp.com/api/v2", "targets.fulcrum.url", "adds the API path"),
    ("targets.fulcrum.url", "https://h/api/core/v1/", "targets.fulcrum.url", "adds the API path"),
    ("targets.fulcrum.url", "https://h/?a=1", "targets.fulcrum.url", "query"),
    ("targets.fulcrum.url", "https://h:99999", "targets.fulcrum.url", "port"),
    ("targets.fulcrum.url", "https://h x", "targets.fulcrum.url", "http"),
    ("targets.fulcrum.verify_tls", "no", "targets.fulcrum.verify_tls", "true or false"),
    ("targets.fulcrum.verify_tls", 0, "targets.fulcrum.verify_tls", "true or false"),
    ("targets.fulcrum.timeout", "0s", "targets.fulcrum.timeout", "greater than 0"),
    (
        "targets.fulcrum.max_requests_per_second",
        0,
        "targets.fulcrum.max_requests_per_second",
        "greater than 0",
    ),
    ("targets.fulcrum.max_requests_per_second", "5", "targets.fulcrum.max_requests_per_second", "number"),
    ("targets.fulcrum.max_concurrent_uploads", 0, "targets.fulcrum.max_concurrent_uploads", "at least 1"),
    ("targets.fulcrum.token", DELETE, "targets.fulcrum.token", "required"),
    ("targets.fulcrum.token", "", "targets.fulcrum.token", "empty"),
    ("targets.fulcrum.field", DELETE, "targets.fulcrum.field", "required"),
    ("targets.fulcrum.field", 1234, "targets.fulcrum.field", "text"),
    ("targets.fulcrum.owner", "user", "targets.fulcrum.owner", "record, form"),
    ("targets.fulcrum.kind", "video", "targets.fulcrum.kind", "attachment, photo"),
    ("targets.fulcrum.caption", "{stemm}", "targets.fulcrum.caption", "unknown placeholder {stemm}"),
    ("targets.fulcrum.caption", "{stem", "targets.fulcrum.caption", "not a valid template"),
    ("targets.fulcrum.caption", "{}", "targets.fulcrum.caption", "not a valid template"),
    ("targets.fulcrum.skip_webhooks", "yes", "targets.fulcrum.skip_webhooks", "true or false"),
    ("targets.layers.token", DELETE, "targets.layers.token", "required"),
    ("targets.layers.name_template", "{title}", "targets.layers.name_template", "unknown placeholder"),
    (
        "targets.visibuild.token",
        DELETE,
        "targets.visibuild",
        "either token, or both client_id and client_secret",
    ),
    ("targets.visibuild.client_id", "id", "targets.visibuild.token", "not both"),
    ("targets.visibuild.ticket", ["a"], "targets.visibuild.ticket", "mapping"),
    ("targets.visibuild.ticket", {"title": "x"}, "targets.visibuild.ticket.title", "title_template"),
    ("targets.visibuild.ticket", {"projectId": 1}, "targets.visibuild.ticket.projectId", "set by hotfolder"),
    (
        "targets.visibuild.ticket",
        {"due": yaml.safe_load("2024-05-01")},
        "targets.visibuild.ticket.due",
        "quote",
    ),
    ("targets.visibuild.token_url", "https://h/oauth/token", "targets.visibuild.token_url", "client_id"),
    ("targets.saferme.team_id", DELETE, "targets.saferme.team_id", "required"),
    ("targets.saferme.team_id", 1.5, "targets.saferme.team_id", "text"),
    ("targets.saferme.field", DELETE, "targets.saferme.field", "required"),
    ("targets.saferme.poll_attempts", 0, "targets.saferme.poll_attempts", "at least 1"),
    ("targets.saferme.poll_interval", "fast", "targets.saferme.poll_interval", "duration"),
    ("targets.espocrm.api_key", DELETE, "targets.espocrm.api_key", "required"),
    ("targets.espocrm.entity", DELETE, "targets.espocrm.entity", "required"),
    ("targets.espocrm.field_type", DELETE, "targets.espocrm.field_type", "required"),
    ("targets.espocrm.field_type", "files", "targets.espocrm.field_type", "file, attachments"),
    ("targets.espocrm.chunk_size", "0MB", "targets.espocrm.chunk_size", "greater than 0"),
    ("targets.espocrm.chunk_threshold", "big", "targets.espocrm.chunk_threshold", "size"),
    ("targets.espocrm.secret", 7, "targets.espocrm.secret", "text"),
]


@pytest.mark.parametrize(
    ("path", "value", "key", "words"), REFUSED,
    ids=[f"{r[0]}={'<deleted>' if r[1] is DELETE else repr(r[1])}" for r in REFUSED],  # stable across processes
)
def test_refused_with_key_named(path: str, value: Any, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_change(path, value))
    assert caught.value.key == key, caught.value
    assert words in caught.value.message, caught.value
    assert str(caught.value).startswith(f"{key}: ")


def test_visibuild_client_id_without_secret() -> None:
    data = base()
    data["targets"]["visibuild"] = {"vendor": "visibuild", "url": "https://h", "client_id": "id"}
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert caught.value.key == "targets.visibuild.client_secret"


def test_fulcrum_photo_needs_record_owner() -> None:
    data = base()
    data["targets"]["fulcrum"].update(kind="photo", owner="form")
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert caught.value.key == "targets.fulcrum.owner"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "is empty"),
        (".", "is . or .."),
        ("..", "is . or .."),
        ("a/b", "contains /"),
        ("a\\b", "contains /"),
        (".hidden", "starts with '.'"),
        ("tab\there", "control character"),
        ("nul\x00", "control character"),
        ("c1\x85", "control character"),
        (" padded", "whitespace"),
        ("x" * 256, "longer than 255 bytes"),
        (7, "must be text"),
    ],
)
def test_target_names_refused(name: object, words: str) -> None:
    data = base()
    data["targets"][name] = data["targets"].pop("fulcrum")
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert caught.value.key.startswith("targets")
    assert words in caught.value.message


def test_target_names_differing_only_in_case_refused() -> None:
    data = base()
    data["targets"]["Fulcrum"] = data["targets"]["fulcrum"]
    with pytest.raises(ConfigError, match="only in letter case"):
        parse(data)


def test_boolean_key_gets_a_quoting_hint() -> None:
    data = yaml.safe_load("on: 1")
    data.update(base())
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert "quote the key" in caught.value.message


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse(["inbox"])
    with pytest.raises(ConfigError, match="empty"):
        parse(None)


# --- environment variables and secrets ---------------------------------------------------------------


def test_missing_variable_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(base(), {})
    assert caught.value.key == "targets.fulcrum.token"
    assert caught.value.message == "environment variable FULCRUM_API_TOKEN is not set"


@pytest.mark.parametrize("text", ["${}", "${1ABC}", "${NOT-A-NAME}", "${OPEN", "prefix ${A} and ${B"])
def test_malformed_references_refused(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_change("targets.fulcrum.field", text), {**ENV, "A": "a"})
    assert caught.value.key == "targets.fulcrum.field"
    assert "${NAME}" in caught.value.message


SECRET_LEAKS: list[tuple[str, Any]] = [
    # A secret in the wrong type, a secret from the environment in a non-secret key, credentials in a URL.
    ("targets.fulcrum.token", [SECRET]),
    ("targets.fulcrum.url", "https://h/${FULCRUM_API_TOKEN}?x"),
    ("targets.fulcrum.url", f"https://user:{SECRET}@api.fulcrumapp.com"),
    ("targets.fulcrum.owner", "${FULCRUM_API_TOKEN}"),
    ("workers", "${FULCRUM_API_TOKEN}"),
    ("watch.settle", "${FULCRUM_API_TOKEN}"),
    ("inbox", "${FULCRUM_API_TOKEN}"),
    ("targets.espocrm.field_type", "${FULCRUM_API_TOKEN}"),
    ("targets.fulcrum.field", f"{SECRET}${{"),
]


@pytest.mark.parametrize(("path", "value"), SECRET_LEAKS)
def test_secrets_never_in_messages(path: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_change(path, value))
    assert SECRET not in str(caught.value)
    assert "s3cr3t" not in repr(caught.value.args)


def test_secret_inline_in_yaml_not_echoed_on_type_error() -> None:
    data = with_change("targets.espocrm.api_key", 123456789)
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert "123456789" not in str(caught.value)
    assert "not shown" in caught.value.message


# --- files -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path, ENV)
    assert caught.value.key == str(path)
    assert "not found" in caught.value.message


def test_unreadable_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, ENV)
    assert caught.value.key == str(tmp_path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("inbox: /srv/in\ndone: [unclosed\n", 3),
        ("inbox: /srv/in\n  done: /srv/done\n", 2),
        (f"targets:\n  fulcrum:\n    token: {SECRET}\n    token: {SECRET}\n", 4),
        ("a: 1\n---\nb: 2\n", 2),
    ],
)
def test_yaml_errors_name_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, ENV)
    assert caught.value.key == str(path)
    assert f"line {line}," in caught.value.message
    assert SECRET not in str(caught.value)


def test_duplicate_key_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("workers: 2\nworkers: 3\n")
    with pytest.raises(ConfigError, match="duplicate key 'workers'"):
        load_settings(path, ENV)


def test_invalid_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"inbox: /srv/\xff\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path, ENV)


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(BRIEF_SHAPE)
    monkeypatch.setenv("FULCRUM_API_TOKEN", "from-os")
    assert load_settings(path).targets["fulcrum"].option("token") == "from-os"


# --- a journal shared by several daemons ----------------------------------------------------------


def test_a_postgresql_journal_with_its_password_from_the_environment() -> None:
    data = with_change("journal", "postgresql://hotfolder:${HOTFOLDER_DB_PASSWORD}@db.internal:5432/hotfolder")
    data["node"] = {"name": "scan-2", "lease": "20s", "state": "/var/lib/hotfolder-node"}
    settings = parse_settings(data, {**ENV, "HOTFOLDER_DB_PASSWORD": "db-" + SECRET})
    assert settings.shared_journal == f"postgresql://hotfolder:db-{SECRET}@db.internal:5432/hotfolder"
    assert (settings.node.name, settings.node.lease, settings.node.state) == (
        "scan-2", 20.0, Path("/var/lib/hotfolder-node"))
    assert "db-" + SECRET in secret_values(settings)  # redacted from every log line
    from hotfolder.options import shown_database_url

    assert shown_database_url(settings.journal) == "postgresql://hotfolder:[redacted]@db.internal:5432/hotfolder"


def test_a_sqlite_journal_is_not_shared_and_the_node_has_defaults() -> None:
    settings = parse(base())
    assert settings.shared_journal is None and isinstance(settings.journal, Path)
    assert settings.node.lease == 30.0 and settings.node.name


@pytest.mark.parametrize(("journal", "words"), [
    ("postgresql://db.internal", "the host and the database are needed"),
    ("postgresql://user@:5432/db", "the host and the database are needed"),
    ("postgresql://user@db:port/db", "cannot be read"),
    ("relative/journal.db", "absolute path"),
])
def test_a_journal_that_is_neither_a_path_nor_a_database_url_is_refused(journal: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_change("journal", journal))
    assert caught.value.key == "journal" and words in caught.value.message


def test_a_lease_too_short_to_renew_is_refused() -> None:
    data = base()
    data["node"] = {"lease": "1s"}
    with pytest.raises(ConfigError, match=r"node\.lease"):
        parse(data)
