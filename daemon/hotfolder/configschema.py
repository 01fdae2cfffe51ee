"""The config file's JSON Schema (draft 2020-12), built from hotfolder.config's own tables.

What it is for: an editor pointed at it (the YAML language server's
``# yaml-language-server: $schema=...`` comment) completes keys and marks a typo or a wrong type
while the file is written. ``hotfolder check-config`` stays the authority: the schema accepts
everything check-config accepts (but a target's ``vendor`` given as ``${NAME}``: the vendor picks
the target's keys), and refuses what can be seen one value at a time, but not the rules that span
keys (nested folders, retry.max_backoff below retry.backoff, Visibuild's credentials, an SMTP
username without its password), nor
whether each ``${NAME}`` is set.

Where each part comes from, so that nothing is written twice:

* each vendor's keys, which are required, their defaults and which are secrets: ``VENDOR_OPTIONS``;
  the kind of each value is read off the option's parser (its name and, for ``_choice``,
  ``_integer``, ``_duration`` and ``_size``, the arguments it was made with: the choices, the
  minimum, whether 0 is allowed). A parser not known here fails the build (:class:`SchemaError`),
  so a new kind of value cannot slip through as "anything";
* the key names of the top level, ``watch``, ``retry`` and every target: the fields of the settings
  dataclasses (``Settings``, ``WatchSettings``, ``RetrySettings``, ``TargetSettings``). config.py
  reads those sections in code rather than from a table, so their kinds and defaults are in
  :data:`_SECTIONS` below; a field without an entry there (or an entry without a field) fails the
  build, and tests/test_config_schema.py checks every kind against ``parse_settings`` value by value;
* the choices (vendors, watch methods, log levels, duplicate policies), template fields and the
  default ignore list: config.py's public constants.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from hotfolder import config, options
from hotfolder.alerts.options import EMAIL_OPTIONS, NOTIFY_OPTIONS, OWN_HEADERS, WEBHOOK_OPTIONS

DRAFT = "https://json-schema.org/draft/2020-12/schema"


class SchemaError(Exception):
    """The tables hold something the schema cannot describe yet: extend this module."""


# --- regular expressions (ECMA-262 and Python alike) ---------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Text whose every "${" starts a well-formed ${NAME}: what config.py's substitution accepts.
_TEXT_PIECE = rf"(?:[^$]|\$(?!\{{)|\$\{{{_NAME}\}})"
_TEXT = rf"^{_TEXT_PIECE}*$"
_NONEMPTY_TEXT = rf"^(?=[\s\S]*\S){_TEXT_PIECE}*$"
# Text with at least one ${NAME}: its value is known only when the file is loaded.
_ENV_REFERENCE = rf"^(?=[\s\S]*\$\{{{_NAME}\}}){_TEXT_PIECE}*$"
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NONZERO = r"(?=[^1-9]*[1-9])"  # at least one digit other than 0, before the unit letters
_DURATION = rf"{_NUMBER}\s*(?:ms|s|m|h|d)?"
# Bytes are whole (1.0 is, 1.5 is not); K/M/G take a fraction (1.5GB).
_SIZE = rf"(?:(?:\d+(?:\.0*)?|\.0+)\s*[bB]?|{_NUMBER}\s*[kmgKMG](?:[iI]?[bB])?)"
_URL = r"^[hH][tT][tT][pP][sS]?://[^/?#@\s\x00-\x1f\x7f]+(?:/[^?#\s\x00-\x1f\x7f]*)?$"
_API_PATH = r"/api(?:/core)?(?:/v\d+)?/*$"  # the vendor's API root pasted in: hotfolder adds it
# A webhook's URL: like _URL, but a query is allowed (some receivers put their key there).
_WEBHOOK_URL = r"^[hH][tT][tT][pP][sS]?://[^/?#@\s\x00-\x1f\x7f]+(?:[/?#][^\s\x00-\x1f\x7f]*)?$"
_EMAIL = r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$"
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# A target is a folder directly under the inbox: a plain, visible, portable name.
_TARGET_NAME = r"^(?![.\s])[^/\\\x00-\x1f\x7f-\x9f]*(?<!\s)$"


def _quantities(kind: str, json_type: str, amount: str, examples: str) -> dict[str, Any]:
    """A duration or a size: a bare number, or text with a unit; any of them, or only above 0."""
    env = {"$ref": "#/$defs/env_reference"}
    return {
        kind: {
            "anyOf": [{"type": json_type, "minimum": 0}, {"type": "string", "pattern": rf"^\s*{amount}\s*$"}, env],
            "description": f"a {kind} such as {examples}",
        },
        f"positive_{kind}": {
            "anyOf": [
                {"type": json_type, "exclusiveMinimum": 0},
                {"type": "string", "pattern": rf"^\s*{_NONZERO}{amount}\s*$"},
                env,
            ],
            "description": f"a {kind} greater than 0, such as {examples}",
        },
    }


def _template_pattern() -> str:
    fields = "|".join(options.TEMPLATE_FIELDS)
    placeholder = rf"\{{(?:{fields})(?:[.\[!:][^{{}}]*)?\}}"
    return rf"^(?:\$\{{{_NAME}\}}|\{{\{{|\}}\}}|{placeholder}|[^{{}}])*$"


def _any_case(words: list[str]) -> str:
    """A pattern matching any of ``words`` whole, in any letter case (JSON Schema patterns take no flags)."""
    def letters(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)

    return "^(?:" + "|".join(letters(word) for word in words) + ")$"


def _definitions() -> dict[str, Any]:
    """The value kinds, under ``$defs``; a key's schema refers to one of them."""
    examples = "500ms, 5s, 2m, 1h or 30d (a bare number means seconds)"
    sizes = "512, 20KB, 4MB or 1GB (K/M/G are powers of 1024; KiB/MiB/GiB also accepted)"
    env = {"$ref": "#/$defs/env_reference"}
    fields = ", ".join("{" + name + "}" for name in options.TEMPLATE_FIELDS)
    return {
        "env_reference": {
            "type": "string",
            "pattern": _ENV_REFERENCE,
            "description": "text with ${NAME}: replaced by that environment variable when the file is loaded",
        },
        "text": {"type": "string", "pattern": _TEXT, "description": "text; ${NAME} is replaced from the environment"},
        "nonempty_text": {"type": "string", "pattern": _NONEMPTY_TEXT, "description": "non-empty text"},
        "secret": {
            "type": "string",
            "pattern": _NONEMPTY_TEXT,
            "description": "a secret: write it as ${NAME} and keep the value in the environment; never shown in errors",
        },
        "id_text": {
            "anyOf": [{"type": "integer"}, {"$ref": "#/$defs/nonempty_text"}],
            "description": "an identifier (a bare number is read as text)",
        },
        "absolute_path": {
            "anyOf": [{"type": "string", "pattern": r"^/[^\x00]*$"}, env],
            "description": "an absolute path (~ and relative paths are not expanded)",
        },
        "database_url": {
            "anyOf": [{"type": "string", "pattern": r"^postgres(ql)?://[^/\s]+/[^\s]+$"}, env],
            "description": "postgresql://user@host:port/database; a password as ${NAME} or in .pgpass",
        },
        "auto_or_duration": {
            "anyOf": [{"const": "auto"}, {"$ref": "#/$defs/duration"}],
            "description": f"auto, or a duration such as {examples}",
        },
        **_quantities("duration", "number", _DURATION, examples),
        **_quantities("size", "integer", _SIZE, sizes),
        "url": {
            "anyOf": [{"type": "string", "pattern": _URL, "not": {"pattern": _API_PATH}}, env],
            "description": "an http:// or https:// URL of the host, without the API path, a query or credentials",
        },
        "template": {
            "type": "string",
            "pattern": _template_pattern(),
            "description": f"a template over {fields}; write a literal brace as {{{{ or }}}}",
        },
        "listen_address": {
            "anyOf": [{"type": "string", "pattern": options.LISTEN_ADDRESS}, env],
            "description": "host:port, such as 127.0.0.1:8765 or [::1]:8765 (port 0: any free port)",
        },
        "host_names": {
            "type": "array",
            "items": {"$ref": "#/$defs/nonempty_text"},
            "description": "host names, as a browser puts them in the Host header",
        },
        "patterns": {
            "type": "array",
            "items": {"$ref": "#/$defs/nonempty_text"},
            "description": "shell-style file name patterns; a trailing / matches folders",
        },
        "free_mapping": {"type": "object", "description": "a mapping of extra fields, sent as written"},
        "webhook_url": {
            "anyOf": [{"type": "string", "pattern": _WEBHOOK_URL}, env],
            "description": "an http:// or https:// URL, without credentials; a query is kept",
        },
        "http_headers": {
            "type": "object",
            "propertyNames": {"pattern": _HEADER_NAME, "not": {"pattern": _any_case(sorted(OWN_HEADERS))}},
            "additionalProperties": {"type": "string", "pattern": r"^[^\x00-\x1f\x7f]*$"},
            "description": "extra HTTP headers, name: value (a value written as ${NAME} is kept secret)",
        },
        "email_address": {
            "anyOf": [{"type": "string", "pattern": _EMAIL}, env],
            "description": "an email address such as ops@example.com",
        },
        "email_addresses": {
            "anyOf": [{"$ref": "#/$defs/email_address"},
                      {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/email_address"}}],
            "description": "an email address or a list of them",
        },
        "boolean": {"type": "boolean", "description": "true or false"},
        "positive_number": {"type": "number", "exclusiveMinimum": 0, "description": "a number greater than 0"},
    }


# --- a parser's kind -----------------------------------------------------------------------------

# The option parsers (hotfolder.options), by name without the leading underscore, and the $defs entry of each.
_PLAIN_KINDS: Mapping[str, str] = {
    "text": "text",
    "nonempty_text": "nonempty_text",
    "secret_text": "secret",
    "id_text": "id_text",
    "boolean": "boolean",
    "positive_number": "positive_number",
    "template": "template",
    "url": "url",
    "ticket": "free_mapping",
    "webhook_url": "webhook_url",
    "headers": "http_headers",
    "email_address": "email_address",
    "email_addresses": "email_addresses",
    "patterns": "patterns",
    "absolute_path": "absolute_path",
    "auto_or_duration": "auto_or_duration",
}


def _choice(choices: tuple[str, ...]) -> dict[str, Any]:
    return {
        "anyOf": [{"enum": list(choices)}, {"$ref": "#/$defs/env_reference"}],
        "description": "one of " + ", ".join(choices),
    }


def _integer(minimum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": f"a whole number of at least {minimum}"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


# The parsers hotfolder.options makes from arguments: name -> (the argument's name, its schema).
_MADE_KINDS: Mapping[str, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    "choice": ("choices", _choice),
    "integer": ("minimum", _integer),
}


def value_schema(parse: Callable[..., Any]) -> dict[str, Any]:
    """The schema of the values one of the option parsers (hotfolder.options) accepts."""
    qualname = getattr(parse, "__qualname__", repr(parse))
    outer = qualname.split(".")[0].lstrip("_")
    if "<locals>" not in qualname and outer in _PLAIN_KINDS:
        return _ref(_PLAIN_KINDS[outer])
    code = getattr(parse, "__code__", None)
    cells = dict(zip(code.co_freevars, getattr(parse, "__closure__", None) or (), strict=True)) if code else {}
    if outer == "amount" and {"noun", "positive"} <= cells.keys():
        # options.duration and options.size: one helper, told which amount and whether 0 is refused.
        noun, positive = cells["noun"].cell_contents, cells["positive"].cell_contents
        return _ref(f"positive_{noun}" if positive else noun)
    if outer in _MADE_KINDS:
        argument, make = _MADE_KINDS[outer]
        if argument in cells:
            return make(cells[argument].cell_contents)
    raise SchemaError(f"no JSON Schema for the config parser {qualname}: add it to hotfolder/configschema.py")


# --- the sections config.py reads in code --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Key:
    schema: dict[str, Any]
    required: bool = False
    default: object = None


# Kinds and defaults of the keys that config.py reads in parse_settings, _parse_watch, _parse_retry
# and _parse_target (as YAML would write the defaults). Key names must match the dataclass fields.
_SECTIONS: Mapping[str, Mapping[str, _Key]] = {
    "": {
        "inbox": _Key(_ref("absolute_path"), required=True),
        "done": _Key(_ref("absolute_path"), required=True),
        "failed": _Key(_ref("absolute_path"), required=True),
        "journal": _Key({"anyOf": [_ref("absolute_path"), _ref("database_url")],
                         "description": "the SQLite journal file (an absolute path), or postgresql://user@host:port/db "
                                        "for a journal shared by several daemons"}, required=True),
        "workers": _Key(_integer(1), default=4),
        "log_level": _Key(_choice(config.LOG_LEVELS), default="info"),
        "duplicates": _Key(_choice(config.DUPLICATE_POLICIES), default="skip"),
        "archive_after": _Key(_ref("positive_duration"), default="30d"),
    },
    "watch": {
        "method": _Key(_choice(config.WATCH_METHODS), default="auto"),
        "settle": _Key(_ref("duration"), default="5s"),
        "poll_interval": _Key(_ref("positive_duration"), default="2s"),
        "rescan": _Key(_ref("positive_duration"), default="5m"),
        "ignore": _Key(_ref("patterns"), default=list(config.DEFAULT_IGNORE)),
        "check_writers": _Key(_ref("boolean"), default=True),
        "check_complete": _Key(_ref("boolean"), default=True),
        "incomplete_timeout": _Key(_ref("positive_duration"), default="10m"),
        "attribute_cache": _Key(_ref("auto_or_duration"), default="auto"),
    },
    "node": {
        "name": _Key({**_ref("nonempty_text"),
                      "description": "this node's name, unique per running daemon; default: the host name"}),
        "lease": _Key(_ref("positive_duration"), default="30s"),
        "state": _Key(_ref("absolute_path"), default="/var/lib/hotfolder"),
    },
    "http": {
        "listen": _Key(_ref("listen_address"), default="127.0.0.1:8765"),
        "token_file": _Key(_ref("absolute_path")),
        "allowed_hosts": _Key(_ref("host_names"), default=[]),
        "stuck_after": _Key(_ref("positive_duration"), default="10m"),
        "paused_limit": _Key(_ref("positive_duration"), default="1h"),
    },
    "retry": {
        "attempts": _Key(_integer(1), default=8),
        "backoff": _Key(_ref("positive_duration"), default="2s"),
        "max_backoff": _Key(_ref("positive_duration"), default="10m"),
    },
    "targets.<name>": {
        "vendor": _Key({"enum": list(config.VENDORS)}, required=True),
        "url": _Key(_ref("url"), required=True),
        "verify_tls": _Key(_ref("boolean"), default=True),
        "timeout": _Key(_ref("positive_duration"), default="60s"),
        "max_requests_per_second": _Key(_ref("positive_number")),
        "max_concurrent_uploads": _Key(_integer(1)),
    },
}

# The dataclass behind each section, and its fields that are not keys of that section.
_SECTION_FIELDS: Mapping[str, tuple[type, frozenset[str]]] = {
    "": (config.Settings, frozenset({"watch", "retry", "targets", "notify", "node", "http"})),
    "node": (config.NodeSettings, frozenset()),
    "watch": (config.WatchSettings, frozenset()),
    "http": (config.HttpSettings, frozenset()),
    "retry": (config.RetrySettings, frozenset()),
    "targets.<name>": (config.TargetSettings, frozenset({"name", "options"})),
}


def _section_keys(section: str) -> Mapping[str, _Key]:
    cls, not_keys = _SECTION_FIELDS[section]
    fields = {field.name for field in dataclasses.fields(cls)} - not_keys
    keys = _SECTIONS[section]
    if set(keys) != fields:
        raise SchemaError(
            f"section {section or '(top level)'}: {cls.__name__} has the fields {sorted(fields)} "
            f"but hotfolder/configschema.py knows {sorted(keys)}"
        )
    return keys


# --- putting it together -------------------------------------------------------------------------


def _property(key: _Key, definitions: Mapping[str, Any], secret: bool = False) -> dict[str, Any]:
    schema = dict(key.schema)
    described = definitions[schema["$ref"].rpartition("/")[2]] if "$ref" in schema else schema
    words = [schema.pop("description", None) or described.get("description") or "see config.example.yaml"]
    if key.required:
        words.append("Required.")
    else:
        # Absent and null mean the same: the default (a section whose keys are all commented out is null).
        alternatives = schema.pop("anyOf") if set(schema) == {"anyOf"} else [schema]
        schema = {"anyOf": [*alternatives, {"type": "null"}]}
        if key.default is not None:
            schema["default"] = key.default
            words.append(f"Default: {_yaml_text(key.default)}.")
    if secret:
        schema["writeOnly"] = True  # "never shown": the closest draft 2020-12 annotation
    schema["description"] = _sentence(words)
    return schema


def _sentence(words: list[str]) -> str:
    first = words[0][0].upper() + words[0][1:]
    return " ".join([first.rstrip(".") + ".", *words[1:]])


def _yaml_text(value: object) -> str:
    """A default as it would be written in the file."""
    if isinstance(value, str) and value and not value.startswith(("{", "*", "@", "~")):
        return value
    return json.dumps(value)


def _mapping(
    properties: Mapping[str, dict[str, Any]], required: list[str], description: str, nullable: bool
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": ["object", "null"] if nullable else "object",
        "description": description,
        "properties": dict(properties),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _vendor_branch(
    vendor: str, options: Mapping[str, config.Option], definitions: Mapping[str, Any]
) -> dict[str, Any]:
    common = _section_keys("targets.<name>")
    properties = {name: _property(key, definitions) for name, key in common.items() if name != "vendor"}
    properties = {"vendor": {"const": vendor, "description": f"The vendor: {vendor}."}, **properties}
    required = [name for name, key in common.items() if key.required]
    for name, option in options.items():
        if name in properties:
            raise SchemaError(f"vendor {vendor}: option {name} is also a key of every target")
        key = _Key(value_schema(option.parse), required=option.required, default=_json_default(option.default))
        properties[name] = _property(key, definitions, secret=option.secret)
        if option.required:
            required.append(name)
    return _mapping(properties, required, f"A target of vendor {vendor}.", nullable=False)


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _table(options_table: Mapping[str, config.Option], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """A section read through an option table: each key's kind, default and secret flag."""
    properties = {}
    for name, option in options_table.items():
        key = _Key(value_schema(option.parse), required=option.required, default=_json_default(option.default))
        properties[name] = _property(key, definitions, secret=option.secret)
    return properties


def _notify_schema(definitions: Mapping[str, Any]) -> dict[str, Any]:
    """``notify:`` (hotfolder.alerts.options): at least one channel, webhooks as a list."""
    def required_of(table: Mapping[str, config.Option]) -> list[str]:
        return [name for name, option in table.items() if option.required]

    webhook = _mapping(_table(WEBHOOK_OPTIONS, definitions), required_of(WEBHOOK_OPTIONS),
                       "One webhook: a JSON POST per alert, signed with `secret` when given.", nullable=False)
    email = _mapping(_table(EMAIL_OPTIONS, definitions), required_of(EMAIL_OPTIONS),
                     "Email over SMTP: a plain-text message per alert.", nullable=True)
    properties = _table(NOTIFY_OPTIONS, definitions)
    properties["webhooks"] = {
        "type": ["array", "null"], "items": webhook, "description": "Webhooks to POST every alert to.",
    }
    properties["email"] = email
    schema = _mapping(properties, [], "Alerts by webhook and email (off when absent).", nullable=True)
    schema["anyOf"] = [
        {"type": "null"},
        {"required": ["webhooks"], "properties": {"webhooks": {"type": "array", "minItems": 1}}},
        {"required": ["email"], "properties": {"email": {"type": "object"}}},
    ]
    return schema


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the whole config file."""
    definitions = _definitions()
    vendors = dict(config.VENDOR_OPTIONS)
    if set(vendors) != set(config.VENDORS):
        raise SchemaError(f"VENDORS {sorted(config.VENDORS)} and VENDOR_OPTIONS {sorted(vendors)} differ")
    for vendor in config.VENDORS:
        definitions[f"target_{vendor}"] = _vendor_branch(vendor, vendors[vendor], definitions)
    definitions["target"] = {
        "type": "object",
        "description": "One target: the folder inbox/<name>/ and where its files go. `vendor` picks the other keys.",
        "required": ["vendor"],
        "properties": {"vendor": {"enum": list(config.VENDORS), "description": "Which vendor's keys follow."}},
        "oneOf": [_ref(f"target_{vendor}") for vendor in config.VENDORS],
    }
    properties: dict[str, dict[str, Any]] = {}
    for name, key in _section_keys("").items():
        properties[name] = _property(key, definitions)
    for section, description in (
        ("watch", "How the inbox is watched and when a file is ready."),
        ("retry", "How often, and how far apart, a failing file is tried again."),
        ("node", "This daemon among several sharing one PostgreSQL journal (unused with a SQLite journal)."),
        ("http", "The status page, /metrics, /healthz and /readyz. Off unless this section is given."),
    ):
        keys = _section_keys(section)
        properties[section] = _mapping(
            {name: _property(key, definitions) for name, key in keys.items()}, [], description, nullable=True
        )
    properties["notify"] = _notify_schema(definitions)
    properties["targets"] = {
        "type": "object",
        "description": "One target per folder under the inbox (at least one); the key is the folder's name.",
        "minProperties": 1,
        "propertyNames": {"pattern": _TARGET_NAME, "minLength": 1, "maxLength": 255},
        "additionalProperties": _ref("target"),
    }
    order = [field.name for field in dataclasses.fields(config.Settings)]
    required = [name for name, key in _SECTIONS[""].items() if key.required] + ["targets"]
    return {
        "$schema": DRAFT,
        "title": "hotfolder configuration",
        "description": (
            "The hotfolder config file (config.example.yaml documents every key). `hotfolder check-config` "
            "checks more than this schema can: rules that span keys, and that every ${NAME} is set."
        ),
        "type": "object",
        "properties": {name: properties[name] for name in order},
        "required": required,
        "additionalProperties": False,
        "$defs": definitions,
    }
