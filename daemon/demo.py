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

from daemon.config import load_settings
from daemon.logsetup import configure_logging
from daemon.sandbox import Sandbox

DEMO_TOKEN = "sandbox-token"  # the simulator's own token; not a secret anywhere else
DEMO_RECORDS = ("rec-1001", "rec-1002", "rec-1003")
FIELD = "6ca0"


def write_demo_config(folder: Path, sandbox_url: str) -> Path:
    config = {
        "inbox": str(folder / "inbox"),
        "done": str(folder / "done"),
        "failed": str(folder / "failed"),
        "journal": str(folder / "journal.db"),
        "watch": {"method": "auto", "settle": "1s", "poll_interval": "1s", "rescan": "1m"},
        "workers": 4,
        "retry": {"attempts": 5, "backoff": "1s", "max_backoff": "30s"},
        "targets": {
            "fulcrum": {"vendor": "fulcrum", "url": sandbox_url, "token": DEMO_TOKEN, "field": FIELD},
        },
    }
    path = folder / "config.yaml"
    path.write_text(
        "# Written by `hotfolder demo` for the local simulator; see config.example.yaml for every key.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    return path


def seed(sandbox: Sandbox, inbox: Path) -> None:
    for record in DEMO_RECORDS:
        sandbox.fulcrum.add_record(record, form_values={})
        (inbox / "fulcrum" / record).mkdir(parents=True, exist_ok=True)
    sample = inbox / "fulcrum" / DEMO_RECORDS[0] / "welcome-scan.txt"
    if not sample.exists():
        sample.write_text("A sample scan, dropped by `hotfolder demo` so you can watch one file travel.\n")


def run_demo(folder: Path, *, port: int = 8787, exit_when_idle: bool = False) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    configure_logging("info")
    from daemon.service import Daemon

    with Sandbox(folder / "simulator", port=port) as sandbox:
        config_path = write_demo_config(folder, sandbox.url)
        settings = load_settings(config_path)
        settings.inbox.mkdir(parents=True, exist_ok=True)
        seed(sandbox, settings.inbox)
        print(
            f"\nhotfolder demo\n"
            f"  simulator:  {sandbox.url}  (records and attachments: {sandbox.url}/_sandbox/state)\n"
            f"  config:     {config_path}\n"
            f"  drop files: {settings.inbox / 'fulcrum'}/<record>/   records: {', '.join(DEMO_RECORDS)}\n"
            f"  results:    {settings.done}  and  {settings.failed}\n"
            f"  status:     hotfolder status -c {config_path}\n"
            f"  stop:       Ctrl-C\n",
            flush=True,
        )
        daemon = Daemon(settings)
        if exit_when_idle:
            return daemon.run_once()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        daemon.run_until(stop)
    return 0
