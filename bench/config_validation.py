"""Config validation side by side: hotfolder's hand-written parsers, pydantic v2 and msgspec (issue 11, item 6).

    python3 -m venv /tmp/cfgstudy
    /tmp/cfgstudy/bin/pip install pydantic msgspec pyyaml structlog httpx watchdog
    /tmp/cfgstudy/bin/python bench/config_validation.py            # about a minute

pydantic and msgspec are not project dependencies, hence a venv of their own (the other three
packages are hotfolder's, so that hotfolder.config imports there too). Every figure comes from that
one interpreter.

What it prints, as Markdown for RESULTS.md:

1. For the same 20 bad configs (config.example.yaml with one change each, most from the REFUSED
   table of tests/test_config.py), the message of (a) ``hotfolder.config.parse_settings``,
   (b) the pydantic prototype and (c) the msgspec prototype (bench/config_models/), and whether
   it names the key path (``targets.fulcrum.token:``) and keeps every secret out. (b) and (c) are
   shown through the small formatter each prototype has (``key.path: message`` per error), since
   a migration would print that rather than the library's own text.
2. Import time: a fresh interpreter per sample, ``time.perf_counter`` around the import (median
   and minimum of --imports rounds, the rows taken in turn, after one warm-up round that writes the .pyc files), and the
   wall time of the whole process (``python -c "import ..."``), which is what starting the daemon
   or ``check-config`` pays. yaml is counted for all three: each reads the file with it.
3. Validation time per config, in this process: config.example.yaml (five targets) and the 20 bad
   configs (the time to the refusal and its message), median of --rounds rounds.
4. Lines of code of each validator: lines with code, without blank lines, comments and docstrings.
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import os
import re
import statistics
import subprocess
import sys
import time
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "daemon"), str(ROOT / "bench")]

import yaml  # noqa: E402

from hotfolder import config  # noqa: E402

try:
    from config_models import _common, msgspec_model, pydantic_model
except ImportError as missing:  # pragma: no cover - the study venv is not the project's
    raise SystemExit(f"{missing}: run this with a venv that has pydantic and msgspec (see the docstring)") from None

# Every ${NAME} of the example file, set to a value that must never show in a message.
ENV = {
    name: f"s3cr3t-{name.lower()}" for name in re.findall(r"\$\{(\w+)\}", (ROOT / "config.example.yaml").read_text())
}
SECRET = ENV["FULCRUM_API_TOKEN"]
INLINE_SECRET = 123456789  # a secret written into the file itself, as a number
DELETE = object()

# (what is wrong, dotted key to change, new value, the key the message must name, a variable to unset)
CASES: list[tuple[str, str, Any, str, str | None]] = [
    ("typo at the top level", "workres", 2, "workres", None),
    ("typo in a target", "targets.fulcrum.tokn", "x", "targets.fulcrum.tokn", None),
    ("another vendor's option", "targets.layers.field", "6ca0", "targets.layers.field", None),
    ("text for a number", "workers", "4", "workers", None),
    ("bad duration", "watch.settle", "soon", "watch.settle", None),
    ("zero where > 0", "watch.poll_interval", 0, "watch.poll_interval", None),
    ("relative path", "inbox", "srv/scans/inbox", "inbox", None),
    ("required vendor key missing", "targets.fulcrum.token", DELETE, "targets.fulcrum.token", None),
    ("required choice missing", "targets.espocrm.field_type", DELETE, "targets.espocrm.field_type", None),
    ("${VAR} of a secret not set", "", None, "targets.saferme.token", "SAFERME_ACCESS_TOKEN"),
    ("inline secret of the wrong type", "targets.espocrm.api_key", INLINE_SECRET, "targets.espocrm.api_key", None),
    ("secret via ${VAR} in a choice", "targets.fulcrum.owner", "${FULCRUM_API_TOKEN}", "targets.fulcrum.owner", None),
    ("URL not http(s)", "targets.fulcrum.url", "ftp://api.fulcrumapp.com", "targets.fulcrum.url", None),
    ("URL with a password", "targets.fulcrum.url", f"https://user:{SECRET}@api.fulcrumapp.com",
     "targets.fulcrum.url", None),
    ("URL with the API path", "targets.fulcrum.url", "https://api.fulcrumapp.com/api/v2", "targets.fulcrum.url", None),
    ("unknown vendor", "targets.fulcrum.vendor", "dropbox", "targets.fulcrum.vendor", None),
    ("nested: a ticket field hotfolder sets", "targets.visibuild.ticket", {"title": "x"},
     "targets.visibuild.ticket.title", None),
    ("template placeholder typo", "targets.fulcrum.caption", "{stemm}", "targets.fulcrum.caption", None),
    ("two credential forms (rule)", "targets.visibuild.token", "${FULCRUM_API_TOKEN}", "targets.visibuild.token", None),
    ("max_backoff < backoff (rule)", "retry.max_backoff", "1s", "retry.max_backoff", None),
]

Validator = tuple[Callable[[Any, dict[str, str]], Any], Callable[[Exception], str]]
VALIDATORS: dict[str, Validator] = {
    "hand-written": (config.parse_settings, str),
    "pydantic": (pydantic_model.validate, pydantic_model.message),
    "msgspec": (msgspec_model.validate, msgspec_model.message),
}
REFUSALS = (config.ConfigError, _common.PrototypeError, ValueError)  # pydantic's and msgspec's are ValueErrors


def example() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config.example.yaml").read_text())


def bad_config(path: str, value: Any, unset: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    data = example()
    if path:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = copy.deepcopy(value)
    return data, {name: text for name, text in ENV.items() if name != unset}


def refusal(name: str, data: Any, env: dict[str, str]) -> str:
    validate, message = VALIDATORS[name]
    try:
        validate(data, env)
    except REFUSALS as error:
        return message(error)
    except Exception as error:  # a crash is a finding too
        return f"CRASH {type(error).__name__}: {error}"
    return "ACCEPTED"


def names(text: str, key: str) -> bool:
    """The message (or one of its "; "-joined errors) starts with the key path."""
    return any(part.startswith(f"{key}:") for part in text.split("; "))


def code(text: str) -> str:
    """A Markdown code span that may itself hold backquotes (msgspec's messages do)."""
    return f"`` {text} ``"


def redact(text: str) -> str:
    """The message as printed here: a leaked secret is replaced by «SECRET», so that the table shows the leak."""
    for value in sorted([*ENV.values(), str(INLINE_SECRET)], key=len, reverse=True):
        text = text.replace(value, "«SECRET»")
    return text


def leaks(text: str) -> bool:
    return "s3cr3t" in text or str(INLINE_SECRET) in text


# --- 1. messages -----------------------------------------------------------------------------------


def messages() -> dict[str, list[bool]]:
    passed: dict[str, list[bool]] = {name: [] for name in VALIDATORS}
    print("## Messages for 20 bad configs\n")
    print("✓/✗ key: the message names the key path as `key:` (and the variable, where one is unset); "
          "✓/✗ secret: no secret value in it.\n")
    print("| # | what is wrong | key to name | " + " | ".join(VALIDATORS) + " |")
    print("|---|---|---|" + "---|" * len(VALIDATORS))
    for number, (what, path, value, key, unset) in enumerate(CASES, 1):
        data, env = bad_config(path, value, unset)
        cells = []
        for name in VALIDATORS:
            text = refusal(name, data, env)
            names_key = names(text, key) and (unset is None or unset in text)
            safe = not leaks(text)
            passed[name].append(names_key and safe)
            shown = redact(text).replace("|", "\\|").replace("\n", " ")
            cells.append(f"{'✓' if names_key else '✗'} key {'✓' if safe else '✗'} secret: {code(shown)}")
        print(f"| {number} | {what} | `{key}` | " + " | ".join(cells) + " |")
    print()
    print("| validator | names the key path | no secret shown | both |")
    print("|---|---|---|---|")
    for name in VALIDATORS:
        keys = sum(names(refusal(name, *bad_config(c[1], c[2], c[4])), c[3]) for c in CASES)
        safe = sum(not leaks(refusal(name, *bad_config(c[1], c[2], c[4]))) for c in CASES)
        print(f"| {name} | {keys}/{len(CASES)} | {safe}/{len(CASES)} | {sum(passed[name])}/{len(CASES)} |")
    print()
    return passed


def raw_texts() -> None:
    """What the libraries print before a formatter: pydantic's str(error), msgspec on the targets as one dict."""
    print("## The libraries' own text, before the prototypes' formatters (three of the cases)\n")
    print("| # | pydantic `str(ValidationError)`, first two lines | msgspec, targets as one `dict[str, Target]` |")
    print("|---|---|---|")
    for number in (2, 8, 16):
        _, path, value, _, unset = CASES[number - 1]
        data, env = bad_config(path, value, unset)
        try:
            pydantic_model.validate(data, env)
            loud = "ACCEPTED"
        except ValueError as error:
            loud = " / ".join(str(error).splitlines()[:3][1:])
        try:
            prepared = _common.prepare(data, env)["targets"]
            msgspec_model.msgspec.convert(prepared, dict[str, msgspec_model.Target], dec_hook=msgspec_model.hook)
            plain = "ACCEPTED"
        except ValueError as error:
            plain = str(error)
        print(f"| {number} | {code(loud)} | {code(plain)} |")
    print()


# --- 2. import time --------------------------------------------------------------------------------

IMPORTS: list[tuple[str, str]] = [
    ("nothing (interpreter start-up)", ""),
    ("yaml", "yaml"),
    ("(a) hotfolder.config", "yaml, hotfolder.config"),
    ("  of which httpx (via hotfolder.errors)", "httpx"),
    ("(a) hotfolder.config once httpx is loaded (config.py's own cost)", "httpx; t = time.perf_counter(); "
     "import yaml, hotfolder.config"),
    ("(a) hotfolder.cli (what check-config loads)", "hotfolder.cli"),
    ("(b) pydantic prototype", "yaml, config_models.pydantic_model"),
    ("  of which pydantic alone", "pydantic"),
    ("(c) msgspec prototype", "yaml, config_models.msgspec_model"),
    ("  of which msgspec alone", "msgspec"),
]


def import_times(samples: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "daemon"), str(ROOT / "bench")])}
    inside: dict[str, list[float]] = {label: [] for label, _ in IMPORTS}
    whole: dict[str, list[float]] = {label: [] for label, _ in IMPORTS}
    for sample in range(samples + 1):  # round-robin, so that a busy moment weighs on every row alike
        for label, modules in IMPORTS:
            code = "import time; t = time.perf_counter()\n"
            code += f"import {modules}\n" if modules else ""
            code += "print(time.perf_counter() - t)"
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            if sample:  # the first round writes .pyc files
                whole[label].append((time.perf_counter() - started) * 1000)
                inside[label].append(float(result.stdout) * 1000)
    print(f"## Import time (a fresh interpreter each, {samples} rounds after a warm-up, rows taken in turn)\n")
    print("| import | in-process median (min), ms | whole process median, ms |")
    print("|---|---|---|")
    for label, modules in IMPORTS:
        process = "—" if "perf_counter" in modules else f"{statistics.median(whole[label]):.1f}"  # httpx counted
        print(f"| {label} | {statistics.median(inside[label]):.1f} ({min(inside[label]):.1f}) | {process} |")
    print()


# --- 3. validation time ----------------------------------------------------------------------------


def per_call(name: str, data: Any, env: dict[str, str], calls: int, rounds: int) -> float:
    figures = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            refusal(name, data, env)
        figures.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(figures)


def validation_times(rounds: int) -> None:
    good = example()
    for validate, _ in VALIDATORS.values():
        validate(good, ENV)  # raises if a prototype does not accept the documented file
    bad = [bad_config(c[1], c[2], c[4]) for c in CASES]
    print(f"## Validation time per config (median of {rounds} rounds)\n")
    print("| validator | config.example.yaml (5 targets), µs | 20 bad configs, mean µs to the message |")
    print("|---|---|---|")
    for name in VALIDATORS:
        accepted = per_call(name, good, ENV, 500, rounds)
        refused = statistics.mean(per_call(name, data, env, 100, rounds) for data, env in bad)
        print(f"| {name} | {accepted:.0f} | {refused:.0f} |")
    print()


# --- 4. lines of code ------------------------------------------------------------------------------


def code_lines(path: Path, before: str | None = None) -> int:
    """Lines holding code: no blank lines, comments or docstrings; only those above ``before`` if given."""
    text = path.read_text()
    stop = text.index(before) if before else len(text)
    last_line = text[:stop].count("\n") + 1
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
            tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len({n for n in lines - docstrings if n < last_line})


def lines_of_code() -> None:
    models = ROOT / "bench" / "config_models"
    config_py = ROOT / "daemon" / "hotfolder" / "config.py"
    shared = code_lines(models / "_common.py")
    print("## Lines of code (code lines only)\n")
    print("| validator | own | shared helpers | total |")
    print("|---|---|---|---|")
    print(f"| (a) hand-written: config.py above `# --- the file` (settings, parsers, tables, rules; "
          f"the whole file: {code_lines(config_py)}) | {code_lines(config_py, '# --- the file')} | — | "
          f"{code_lines(config_py, '# --- the file')} |")
    for label, module in (("(b) pydantic", "pydantic_model.py"), ("(c) msgspec", "msgspec_model.py")):
        own = code_lines(models / module)
        print(f"| {label}: bench/config_models/{module} + _common.py | {own} | {shared} | {own + shared} |")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the validation timings")
    parser.add_argument("--imports", type=int, default=15, help="rounds of fresh interpreters per import")
    args = parser.parse_args()
    import msgspec
    import pydantic

    print(f"Python {sys.version.split()[0]}, pydantic {pydantic.VERSION}, msgspec {msgspec.__version__}, "
          f"PyYAML {yaml.__version__}\n")
    messages()
    raw_texts()
    import_times(args.imports)
    validation_times(args.rounds)
    lines_of_code()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
