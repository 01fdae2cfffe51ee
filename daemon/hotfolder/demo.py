"""`hotfolder demo`: the daemon against the built-in simulator, with a ready-made inbox.

A newcomer runs one command and sees a file travel: the simulator starts on 127.0.0.1, a demo
folder gets an inbox with a few records (and one sample file already in it), a config file is
written beside it for reading, and the daemon runs in the foreground until Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import yaml

from hotfolder.config import load_settings
from hotfolder.logsetup import configure_logging
from hotfolder.sandbox import Sandbox

DEMO_TOKEN = "sandbox-token"  # the simulator's own credentials; not secrets anywhere else
DEMO_RECORDS = ("rec-1001", "rec-1002", "rec-1003")
FIELD = "6ca0"
PHOTO_FIELD = "9f1b"
REPORT_FIELD = "site-photos"

# One target per vendor and kind, each with the folder a newcomer drops files into.
DEMO_FOLDERS: tuple[tuple[str, str], ...] = (
    ("fulcrum/<record>/", "Fulcrum record attachments (records rec-1001, rec-1002, rec-1003)"),
    ("fulcrum-forms/form-1/", "Fulcrum attachments owned by a form"),
    ("fulcrum-camera/<record>/", "Fulcrum photos, the camera case"),
    ("fulcrum-layers/", "Fulcrum MBTiles layers (*.mbtiles; no record level)"),
    ("visibuild/proj-1/", "a Visibuild ticket per file; or a sub-folder with ticket.yaml: one ticket"),
    ("saferme/7001/", "SaferMe report 7001 (Report API v4)"),
    ("espocrm-documents/doc-1/", "EspoCRM Document.file (pdf, docx, txt, ...)"),
    ("espocrm-notes/note-1/", "EspoCRM Note.attachments (kept alongside earlier ones)"),
)


def demo_targets(url: str) -> dict[str, dict[str, object]]:
    fulcrum = {"vendor": "fulcrum", "url": url, "token": DEMO_TOKEN}
    espocrm = {"vendor": "espocrm", "url": url, "api_key": "sandbox-espo-key"}
    return {
        "fulcrum": {**fulcrum, "field": FIELD},
        "fulcrum-forms": {**fulcrum, "field": FIELD, "owner": "form"},
        "fulcrum-camera": {**fulcrum, "field": PHOTO_FIELD, "kind": "photo", "caption": "{stem}"},
        "fulcrum-layers": {"vendor": "fulcrum-layers", "url": url, "token": DEMO_TOKEN},
        "visibuild": {"vendor": "visibuild", "url": url, "client_id": "sandbox-client",
                      "client_secret": "sandbox-secret", "ticket": {"priority": "medium"}},
        "saferme": {"vendor": "saferme", "url": url, "token": "sandbox-saferme-token", "team_id": "42",
                    "field": REPORT_FIELD},
        "espocrm-documents": {**espocrm, "entity": "Document", "field": "file", "field_type": "file"},
        "espocrm-notes": {**espocrm, "entity": "Note", "field": "attachments", "field_type": "attachments"},
    }


def write_demo_config(folder: Path, sandbox_url: str) -> Path:
    config = {
        "inbox": str(folder / "inbox"),
        "done": str(folder / "done"),
        "failed": str(folder / "failed"),
        "journal": str(folder / "journal.db"),
        "watch": {"method": "auto", "settle": "1s", "poll_interval": "1s", "rescan": "1m"},
        "workers": 4,
        "retry": {"attempts": 5, "backoff": "1s", "max_backoff": "30s"},
        "targets": demo_targets(sandbox_url),
    }
    path = folder / "config.yaml"
    path.write_text(
        "# Written by `hotfolder demo` for the local simulator; see config.example.yaml for every key.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def seed(sandbox: Sandbox, inbox: Path) -> None:
    """Records at every simulated vendor, their inbox folders, and one sample file to watch travel."""
    sandbox.fulcrum.add_form("form-1", "Site inspections", [
        {"type": "AttachmentField", "key": FIELD, "label": "Files", "data_name": "files"},
        {"type": "PhotoField", "key": PHOTO_FIELD, "label": "Photos", "data_name": "photos"},
    ])
    for record in DEMO_RECORDS:
        sandbox.fulcrum.add_record(record, form_values={})
        for target in ("fulcrum", "fulcrum-camera"):
            (inbox / target / record).mkdir(parents=True, exist_ok=True)
    sandbox.saferme.add_report("7001", form_fields=[{"key": REPORT_FIELD, "value": []}], title="Site walk")
    sandbox.espocrm.add_record("Document", "doc-1", name="Site plan")
    sandbox.espocrm.add_record("Note", "note-1", post="Inspection notes")
    for relative in ("fulcrum-forms/form-1", "fulcrum-layers", "visibuild/proj-1", "saferme/7001",
                     "espocrm-documents/doc-1", "espocrm-notes/note-1"):
        (inbox / relative).mkdir(parents=True, exist_ok=True)
    sample = inbox / "fulcrum" / DEMO_RECORDS[0] / "welcome-scan.txt"
    if not sample.exists():
        sample.write_text("A sample scan, dropped by `hotfolder demo` so you can watch one file travel.\n")


def run_demo(folder: Path, *, port: int = 8787, exit_when_idle: bool = False) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    configure_logging("info")
    from hotfolder.service import Daemon
    from hotfolder.terminal import shown

    with Sandbox(folder / "simulator", port=port) as sandbox:
        config_path = write_demo_config(folder, sandbox.url)
        settings = load_settings(config_path)
        settings.inbox.mkdir(parents=True, exist_ok=True)
        seed(sandbox, settings.inbox)
        print(
            f"\nhotfolder demo\n"
            f"  simulator:  {sandbox.url}  (records and attachments: {sandbox.url}/_sandbox/state)\n"
            f"  config:     {config_path}\n"
            f"  drop files under {settings.inbox}/ :\n"
            + "".join(f"      {folder:<27} {what}\n" for folder, what in DEMO_FOLDERS)
            + f"  results:    {settings.done}  and  {settings.failed}\n"
            f"  status:     hotfolder status -c {config_path}\n"
            f"  stop:       Ctrl-C\n",
            flush=True,
        )
        with shown("info") as view:
            daemon = Daemon(settings)
            if view is not None:
                view.follow(daemon.events, daemon.live)
            if exit_when_idle:
                return daemon.run_once()
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            daemon.run_until(stop)
    return 0
