"""The status page: plain HTML written on the server, refreshed by the browser every few seconds.

No script at all (the Content-Security-Policy forbids any), so there is no build step and nothing to
inject into. Every value that came from outside (file names, which are hostile input; vendor messages;
ids) passes through :func:`esc`, the only way text reaches the page. The report is the one
``/api/status`` serves (:mod:`hotfolder.statusreport`).
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from hotfolder.statusreport import human_size as size

REFRESH_SECONDS = 5

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#1d2126;background:#f7f8fa}
h1{font-size:20px;margin:0 0 .2em}h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:40%}
th,td{border:1px solid #d6dae0;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eceff3;font-weight:600}
.muted{color:#68707a}.bad{color:#a4161a;font-weight:600}.ok{color:#2b7a0b;font-weight:600}
.paused{color:#a65d00;font-weight:600}
form{display:inline;margin:0}button{font:inherit;padding:.1em .6em;cursor:pointer}
progress{width:10em}.note{background:#fff7d6;border:1px solid #e6cf6e;padding:.4em .8em;display:inline-block}
code{font-size:13px}
""".strip()
STYLE_HASH = "sha256-" + b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

# Every response carries it: no script may run, no style but ours, forms post only here, no framing.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

NOTES = {
    "retried": "Moved back to the inbox: it will be picked up again.",
    "retry-gone": "That file is no longer in failed/ (retried already?).",
    "paused": "Target paused: no new step starts for it until it is resumed.",
    "resumed": "Target resumed.",
    "rescan": "Rescanning the inbox.",
    "unknown-target": "No such target.",
}


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _button(action: str, label: str, csrf: str, **fields: object) -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    return (f'<form method="post" action="/action/{esc(action)}"><input type="hidden" name="csrf" '
            f'value="{esc(csrf)}">{hidden}<button type="submit">{esc(label)}</button></form>')


def _table(headers: Iterable[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _targets(report: Mapping[str, Any], csrf: str) -> str:
    rows = []
    for name, target in report["targets"].items():
        pause = target["paused"]
        if pause is None:
            state, why = '<span class="ok">running</span>', ""
            action = _button("pause", "Pause", csrf, target=name)
        else:
            until = f" until {esc(pause['until'])}" if pause["until"] else ""
            state = f'<span class="paused">paused ({esc(pause["kind"])}{until})</span>'
            why = f'{esc(pause["reason"])} <span class="muted">since {esc(pause["since"])}</span>'
            action = _button("resume", "Resume", csrf, target=name) if pause["kind"] == "by hand" else ""
        rows.append([f"<b>{esc(name)}</b>", esc(target["vendor"]), state, why,
                     esc(target["last_success"] or "never"), action])
    return _table(["target", "vendor", "state", "why", "last success", ""], rows, "No targets.")


def _queue(report: Mapping[str, Any]) -> str:
    steps = report["unfinished_by_step"]
    rows = [[esc(step), esc(count)] for step, count in steps.items()]
    oldest = report["oldest_waiting"]
    said = (f'<p>Oldest waiting: since {esc(oldest["since"])} ({esc(round(oldest["seconds"]))} s)</p>'
            if oldest else "")
    return _table(["step", "jobs"], rows, "Nothing queued.") + said


def _in_flight(report: Mapping[str, Any]) -> str:
    rows = []
    for item in report["in_flight"]:
        progress = f'<progress max="{max(item["total"], 1)}" value="{item["sent"]}"></progress>'
        rate = f"{size(item['bytes_per_second'])}/s" if item["bytes_per_second"] else ""
        rows.append([f"<code>{esc(item['file'])}</code>", esc(item["target"]), esc(item["step"]),
                     f"{progress} {esc(size(item['sent']))} of {esc(size(item['total']))} ({esc(item['percent'])}%)",
                     esc(rate)])
    return _table(["file", "target", "step", "sent", "rate"], rows, "No step under way.")


def _not_ready(report: Mapping[str, Any]) -> str:
    rows = [[f"<code>{esc(w['file'])}</code>", esc(w["reason"]), esc(w["since"])] for w in report["not_ready"]]
    return _table(["file", "why not yet", "since"], rows, "No file is waiting to be finished.")


def _failures(report: Mapping[str, Any], csrf: str) -> str:
    failures = report["failures"]
    rows = []
    for item in failures:
        retry = _button("retry", "Retry", csrf, job=item["job"]) if item["retryable"] else (
            '<span class="muted">not in failed/</span>')
        status = f" (HTTP {esc(item['http_status'])})" if item["http_status"] else ""
        rows.append([f"<code>{esc(item['file'])}</code>", esc(item["target"]), esc(item["step"]),
                     f'<span class="bad">{esc(item["reason"])}</span>{status}', esc(item["at"]), retry])
    targets = sorted({item["target"] for item in failures if item["retryable"]})
    every = " ".join(_button("retry-target", f"Retry all of {name}", csrf, target=name) for name in targets)
    return (f"<p>{every}</p>" if every else "") + _table(
        ["file", "target", "step", "reason", "when", ""], rows, "No failures.")


def _successes(report: Mapping[str, Any]) -> str:
    rows = []
    for item in report["successes"]:
        ids = ", ".join(f"{esc(k)}={esc(v)}" for k, v in item["ids"].items() if not isinstance(v, dict | list))
        rows.append([f"<code>{esc(item['file'])}</code>", esc(item["target"]), f"<code>{ids}</code>",
                     esc(item["at"])])
    return _table(["file", "target", "vendor ids", "when"], rows, "Nothing done yet.")


def _document(title: str, body: str, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>")


def status_page(report: Mapping[str, Any], csrf: str, *, note: str | None = None, version: str = "") -> str:
    said = f'<p class="note">{esc(NOTES[note])}</p>' if note in NOTES else ""
    finished = ", ".join(f"{esc(s)} {esc(n)}" for s, n in report["finished"].items()) or "none"
    body = (
        f"<h1>hotfolder</h1><p class=\"muted\">{esc(version)} · journal <code>{esc(report['journal'])}</code> · "
        f"finished jobs: {finished} · refreshed every {REFRESH_SECONDS} s "
        f"{_button('rescan', 'Rescan now', csrf)}</p>{said}"
        f"<h2>Targets</h2>{_targets(report, csrf)}"
        f"<h2>In flight</h2>{_in_flight(report)}"
        f"<h2>Queue by step</h2>{_queue(report)}"
        f"<h2>Not ready yet</h2>{_not_ready(report)}"
        f"<h2>Recent failures</h2>{_failures(report, csrf)}"
        f"<h2>Recent successes</h2>{_successes(report)}"
    )
    return _document("hotfolder status", body, REFRESH_SECONDS)


def login_page(wrong: bool = False) -> str:
    said = '<p class="bad">That is not the token.</p>' if wrong else ""
    body = ("<h1>hotfolder</h1><p>This page needs the token from the daemon's token file "
            "(<code>http.token_file</code>; its path is in the log of the first start).</p>"
            f'{said}<form method="post" action="/login"><input type="password" name="token" '
            'autocomplete="current-password" size="48" autofocus> <button type="submit">Open</button></form>')
    return _document("hotfolder: token needed", body, None)
