"""hotfolder.configschema: the JSON Schema agrees with the hand-written validation, key by key.

The schema is built from config.py's tables, so these tests check the building, not a second copy:
the example file is valid; typos and another vendor's options are not; every vendor key the tables
know is in the schema with its required/secret flags; and, value by value over a set of probes, the
schema accepts whatever ``parse_settings`` accepts and refuses what it refuses, but for the few kinds
of value a schema cannot see (listed in GAPS).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from hotfolder import config
from hotfolder.config import VENDOR_OPTIONS, VENDORS, parse_settings
from hotfolder.configschema import DRAFT, SchemaError, config_schema, value_schema
from hotfolder.errors import ConfigError
from tests.test_config import ENV, MINIMAL_TARGETS, base

REPO = Path(__file__).resolve().parent.parent
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
COMMON_TARGET_KEYS = ("vendor", "url", "verify_tls", "timeout", "max_requests_per_second", "max_concurrent_uploads")


def schema_errors(data: object) -> list[str]:
    return [f"{error.json_path}: {error.message}" for error in VALIDATOR.iter_errors(data)]


def example() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config.example.yaml").read_text())


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == DRAFT
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    json.dumps(SCHEMA)  # plain JSON all the way down


def test_example_file_is_valid() -> None:
    assert schema_errors(example()) == []


def test_minimal_configs_are_valid() -> None:
    assert schema_errors(base()) == []
    data = base()
    data["watch"] = None  # every key commented out
    data["targets"]["fulcrum"]["caption"] = None  # null is the default, as check-config reads it
    assert schema_errors(data) == []


def test_a_shared_postgresql_journal_is_valid_and_a_typo_in_node_is_not() -> None:
    data = base()
    data["journal"] = "postgresql://hotfolder:${HOTFOLDER_DB_PASSWORD}@db.internal:5432/hotfolder"
    data["node"] = {"name": "scan-1", "lease": "30s", "state": "/var/lib/hotfolder"}
    assert schema_errors(data) == []
    data["node"]["leas"] = "30s"
    assert schema_errors(data) != []
    data = base()
    data["journal"] = "mysql://db/hotfolder"
    assert schema_errors(data) != []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("workres", 2),  # a typo at the top level
        ("watch.setle", "5s"),
        ("retry.tries", 3),
        ("targets.fulcrum.tokn", "x"),  # a typo in a vendor's key
        ("targets.layers.field", "x"),  # an option of another vendor
        ("targets.espocrm.token", "${FULCRUM_API_TOKEN}"),
        ("targets.saferme.owner", "record"),
        ("targets.fulcrum.vendor", "dropbox"),
        ("targets.fulcrum.kind", "video"),
        ("targets.espocrm.chunk_size", "big"),
        ("workers", "4"),
    ],
)
def test_unknown_keys_and_wrong_options_fail(path: str, value: Any) -> None:
    data = example()
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    assert schema_errors(data), path


def test_missing_required_keys_fail() -> None:
    for path in ("inbox", "targets", "targets.fulcrum.token", "targets.fulcrum.vendor", "targets.espocrm.field_type"):
        data = base()
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]
        assert schema_errors(data), path


# --- the tables and the schema cannot drift apart ------------------------------------------------


def branch(vendor: str) -> dict[str, Any]:
    return SCHEMA["$defs"][f"target_{vendor}"]


def test_every_vendor_has_a_branch_selected_by_vendor() -> None:
    assert SCHEMA["$defs"]["target"]["oneOf"] == [{"$ref": f"#/$defs/target_{vendor}"} for vendor in VENDORS]
    for vendor in VENDORS:
        assert branch(vendor)["properties"]["vendor"] == {"const": vendor, "description": f"The vendor: {vendor}."}
        assert branch(vendor)["additionalProperties"] is False


@pytest.mark.parametrize("vendor", VENDORS)
def test_every_key_the_tables_accept_is_in_the_schema(vendor: str) -> None:
    table = VENDOR_OPTIONS[vendor]
    properties = branch(vendor)["properties"]
    assert set(properties) == {*COMMON_TARGET_KEYS, *table}
    assert set(branch(vendor)["required"]) == {"vendor", "url"} | {n for n, o in table.items() if o.required}
    for name, option in table.items():
        assert properties[name].get("writeOnly", False) == option.secret, name
        if option.default is not None:
            # The default the schema shows is the one check-config fills in.
            assert option.parse(option.default, name) == option.parse(properties[name]["default"], name)


def test_sections_match_the_settings_dataclasses() -> None:
    properties = SCHEMA["properties"]
    assert list(properties) == [field for field in config.Settings.__dataclass_fields__]
    assert set(properties["watch"]["properties"]) == set(config.WatchSettings.__dataclass_fields__)
    assert set(properties["retry"]["properties"]) == set(config.RetrySettings.__dataclass_fields__)
    assert set(properties["http"]["properties"]) == set(config.HttpSettings.__dataclass_fields__)


def test_section_defaults_are_what_check_config_fills_in() -> None:
    settings = parse_settings({**base(), "http": {}}, ENV)  # an empty http section: the endpoint with defaults
    data = base()
    for section in ("watch", "retry", "http"):
        data[section] = {
            name: prop["default"] for name, prop in SCHEMA["properties"][section]["properties"].items()
            if "default" in prop  # http.token_file has none: beside the journal
        }
    for name, prop in SCHEMA["properties"].items():
        if "default" in prop:
            data[name] = prop["default"]
    for name in MINIMAL_TARGETS:
        for key in COMMON_TARGET_KEYS:
            prop = branch(data["targets"][name]["vendor"])["properties"][key]
            if "default" in prop:
                data["targets"][name][key] = prop["default"]
    assert parse_settings(data, ENV) == settings


def test_an_unknown_parser_fails_the_build() -> None:
    def _mystery(value: object, key: str) -> object:
        return value

    with pytest.raises(SchemaError, match="_mystery"):
        value_schema(_mystery)


def test_every_key_is_documented_in_the_example_file() -> None:
    text = (REPO / "config.example.yaml").read_text()
    keys = set(SCHEMA["properties"])
    for section in ("watch", "retry", "http"):
        keys |= set(SCHEMA["properties"][section]["properties"])
    for vendor in VENDORS:
        keys |= set(branch(vendor)["properties"])
    undocumented = [key for key in sorted(keys) if not re.search(rf"^[\s#]*{key}\s*[:| ]", text, re.MULTILINE)]
    assert undocumented == []


# --- value by value: the schema and parse_settings agree -----------------------------------------

PROBE_ENV = {**ENV, "SET": "x"}
PROBES: list[Any] = [
    None, True, False, 0, 1, 2, -1, 0.5, 1.5, float("inf"),
    "", " ", "x", "0", "5", "5s", "0s", "0.0s", "500ms", "-5s", "1.5h", " 3 s ", "5 sec", "5S", "1w",
    "4MB", "0MB", "1.5GB", "20KiB", "20mib", "512B", "1TB", "1.5", "1.0", "1.", ".0", "0.5K", "1.5B", "auto",
    "https://h.example", "http://127.0.0.1:8123/", "HTTPS://Api.Example.com/espo/", "https://h/api/v2",
    "https://h/api/core/v1/", "https://u:p@h", "https://h?q=1", "https://h#f", "ftp://h", "https://", "https://h x",
    "/abs/path", "/srv/x/../y/", "rel/path", "~/x",
    "127.0.0.1:8765", "[::1]:0", "localhost:65535", "h:65536", "h:", ":80", "0.0.0.0:80 ", "-h:1", ["scans.lan"],
    "{stem}", "{name}-{record}", "{nope}", "{stem", "{}", "{{x}}", "{stem!r}", "}",
    "${SET}", "pre-${SET}", "${bad-name}", "${}", "${OPEN", "$5 and $", "${SET}/in",
    [], ["*.tmp"], ["ok", ""], ["x", 5], {}, {"a": 1}, {"a": [1, "b"]},
]

# Values the schema accepts and check-config refuses, because a schema cannot see them. Each is
# (a predicate over the probe, the kind of key, why). Anything else that disagrees fails the test.
GAPS: list[tuple[Any, str]] = [
    # ${NAME} is replaced when the file is loaded; the schema cannot know what it will say.
    (lambda path, value: isinstance(value, str) and "${" in value, "an ${NAME} reference"),
    # check-config parses the text as a template with str.format; the schema matches placeholders.
    (lambda path, value: value in ("{stem!r}",), "a conversion in a template"),
    # Visibuild's client credentials come in pairs: a rule spanning keys.
    (lambda path, value: path.endswith(("client_id", "client_secret")) and value is None, "half a pair"),
    # YAML's .inf is a number to JSON Schema too.
    (lambda path, value: value == float("inf"), "infinity"),
]


def _probe_keys() -> list[str]:
    keys = ["watch", "retry", "targets", "http"]
    keys += [f"{name}" for name in SCHEMA["properties"] if name not in ("watch", "retry", "targets", "http")]
    for section in ("watch", "retry", "http"):
        keys += [f"{section}.{name}" for name in SCHEMA["properties"][section]["properties"]]
    for target, body in MINIMAL_TARGETS.items():
        keys += [f"targets.{target}.{name}" for name in branch(body["vendor"])["properties"]]
    return keys


def _with(path: str, value: Any) -> dict[str, Any]:
    data = base()
    data["targets"]["visibuild"] = {  # client credentials: every visibuild key can then be probed
        "vendor": "visibuild", "url": "https://app.visibuild.com.au",
        "client_id": "${VISIBUILD_CLIENT_ID}", "client_secret": "${VISIBUILD_CLIENT_SECRET}",
    }
    if path == "retry.max_backoff":
        data["retry"] = {"backoff": "1ms"}  # so that the rule max_backoff >= backoff stays out of the way
    if path == "targets.visibuild.token":
        del data["targets"]["visibuild"]["client_id"], data["targets"]["visibuild"]["client_secret"]
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)
    return data


def _refusal_of(path: str, data: dict[str, Any]) -> str | None:
    """None if check-config accepts, its message if it refuses this key, "other" if another key."""
    try:
        parse_settings(data, PROBE_ENV)
    except ConfigError as error:
        if error.key == path or error.key.startswith((f"{path}.", f"{path}[")):
            return str(error)
        return "other"
    return None


@pytest.mark.parametrize("path", _probe_keys())
def test_schema_and_check_config_agree_value_by_value(path: str) -> None:
    disagreements = []
    for value in PROBES:
        data = _with(path, value)
        refusal = _refusal_of(path, data)
        if refusal == "other":
            continue  # a rule spanning keys (folders, backoff, credentials) or a probe the path cannot hold
        errors = schema_errors(data)
        if refusal is None and errors:
            disagreements.append(f"{value!r}: check-config accepts, the schema refuses: {errors[0][:200]}")
        elif refusal is not None and not errors and not any(gap(path, value) for gap, _ in GAPS):
            disagreements.append(f"{value!r}: the schema accepts, check-config refuses: {refusal}")
    assert disagreements == []


@pytest.mark.parametrize(
    ("name", "valid"),
    [("scans", True), ("Scans 2", True), ("é", True), ("", False), (".", False), ("..", False), ("a/b", False),
     ("a\\b", False), (".hidden", False), ("tab\there", False), ("c1\x85", False), (" padded", False),
     ("padded ", False), ("x" * 256, False)],
)
def test_target_names(name: str, valid: bool) -> None:
    data = base()
    data["targets"][name] = data["targets"].pop("fulcrum")
    assert (schema_errors(data) == []) == valid
    try:
        parse_settings(data, ENV)
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == valid


# --- the command -------------------------------------------------------------------------------


def test_config_schema_command_prints_the_schema() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "daemon")}
    result = subprocess.run(
        [sys.executable, "-m", "hotfolder", "config-schema"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads(json.dumps(SCHEMA))
    assert jsonschema.Draft202012Validator(printed).is_valid(example())
