"""The `hotfolder` command: run, once, status, retry, check-config, config-schema, demo. Thin on purpose."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hotfolder.config import Settings, load_settings, secret_values
from hotfolder.errors import ConfigError
from hotfolder.logsetup import configure_logging, register_secret

DEFAULT_CONFIG = "/etc/hotfolder/config.yaml"
EXIT_CONFIG = 2
EXIT_ONLINE = 1  # the file is valid, but a vendor refused what it says


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("HOTFOLDER_CONFIG") or DEFAULT_CONFIG)


def _load(path: Path) -> Settings:
    settings = load_settings(path)
    for secret in secret_values(settings):
        register_secret(secret)
    return settings


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _reload_on_sighup() -> threading.Event:
    """Set on SIGHUP (``systemctl reload``); the daemon's main loop re-reads the configuration."""
    wanted = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: wanted.set())
    return wanted


# -- commands ---------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(Path(args.file))
    names = ", ".join(f"{name} ({target.vendor})" for name, target in settings.targets.items())
    print(f"{args.file}: ok — inbox {settings.inbox}, targets: {names}")
    if not args.online:
        return 0
    from hotfolder.online import check_targets  # imported late: the offline check loads no HTTP client

    checks = check_targets(settings)
    for check in checks:
        print(check.line(), file=sys.stdout if check.ok else sys.stderr)
    return 0 if all(check.ok for check in checks) else EXIT_ONLINE


def cmd_config_schema(args: argparse.Namespace) -> int:
    from hotfolder.configschema import config_schema

    print(json.dumps(config_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    path = _config_path(args)
    settings = _load(path)
    configure_logging(settings.log_level)
    from hotfolder.notify import Notifier
    from hotfolder.service import Daemon  # imported late: check-config stays fast and light

    stop, reload = _stop_on_signals(), _reload_on_sighup()  # before the start: a HUP then is not fatal
    daemon = Daemon(settings, load=lambda: _load(path), notifier=Notifier())
    daemon.run_until(stop, reload)
    return 0


def cmd_once(args: argparse.Namespace) -> int:
    settings = _load(_config_path(args))
    from hotfolder.service import Daemon
    from hotfolder.terminal import shown

    with shown(settings.log_level) as view:
        daemon = Daemon(settings)
        if view is not None:
            view.follow(daemon.events, daemon.live)
        return daemon.run_once(_stop_on_signals())


def cmd_status(args: argparse.Namespace) -> int:
    settings = _load(_config_path(args))
    if args.watch is None:
        return _print_status(settings, args)
    while True:  # until Ctrl-C (main answers 130)
        if sys.stdout.isatty():
            print("\x1b[H\x1b[2J", end="")  # home and clear: the report redrawn in place
        else:
            print(f"--- {datetime.now(UTC).isoformat(timespec='seconds')}")
        _print_status(settings, args)
        sys.stdout.flush()
        time.sleep(args.watch)


def _print_status(settings: Settings, args: argparse.Namespace) -> int:
    from hotfolder.live import live_file
    from hotfolder.service import open_journal
    from hotfolder.statusreport import build_report, live_from_file, not_ready, waiting_file

    journal = open_journal(settings, daemon=False)
    try:
        report = build_report(settings, journal, live_from_file(live_file(settings)),
                              not_ready(waiting_file(settings)), limit=args.limit)
    finally:
        journal.close()
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    for line in status_lines(report, settings.archive_after):
        print(line)
    return 0


def status_lines(report: dict[str, Any], archive_after: float) -> list[str]:
    """``hotfolder status`` as text: the report, most urgent first."""
    from hotfolder.statusreport import human_size as _size

    lines = [f"journal: {report['journal']}" + ("" if report["daemon_running"] else " (no daemon running)")]
    if "nodes" in report:
        lines.append("nodes sharing this journal:")
    for node in report.get("nodes", []):
        lines.append(f"  {node['name']} ({node['host']}, pid {node['pid']}): {node['state']}, last heartbeat "
                     f"{node['last_heartbeat']} ({node['heartbeat_age']}s ago), jobs held: {node['jobs_held']}")
    for name, target in report["targets"].items():
        if target["paused"]:
            pause = target["paused"]
            until = f" until {pause['until']}" if pause["until"] else ""
            lines.append(f"target {name} PAUSED ({pause['kind']}{until}): {pause['reason']}")
    if report["in_flight"]:
        lines.append("in flight:")
    for item in report["in_flight"]:
        rate = f", {_size(item['bytes_per_second'])}/s" if item["bytes_per_second"] else ""
        lines.append(f"  #{item['job']} {item['file']} at {item['step']}: {_size(item['sent'])} of "
                     f"{_size(item['total'])} ({item['percent']:g}%{rate})")
    waiting = ", ".join(f"{s} {n}" for s, n in report["unfinished_by_step"].items()) or "none"
    lines.append(f"unfinished jobs by step: {waiting}")
    if report["oldest_waiting"]:
        oldest = report["oldest_waiting"]
        lines.append(f"oldest waiting: since {oldest['since']} ({oldest['seconds']:.0f}s)")
    finished = ", ".join(f"{s} {n}" for s, n in report["finished"].items()) or "none"
    lines.append(f"finished jobs: {finished}")
    if report["archived"]:
        lines.append(f"older finished jobs, archived: {report['archived']} "
                     f"(archive_after: {archive_after / 86400:g} days)")
    if report["not_ready"]:
        lines.append("files not ready yet (not jobs until they are):")
    for item in report["not_ready"]:
        lines.append(f"  {item['file']}: {item['reason']} (since {item['since']})")
    for item in report["unfinished"]:
        line = f"  #{item['job']} {item['file']} at {item['step']}"
        if item["last_error"]:
            line += f" (attempt {item['attempts']}, retry in {item['next_attempt_in']}s: {item['last_error']})"
        lines.append(line)
    if report["failures"]:
        lines.append("failures (newest first):")
    for item in report["failures"]:
        lines.append(f"  #{item['job']} {item['file']} at {item['step']}: {item['reason']}")
    return lines


def cmd_retry(args: argparse.Namespace) -> int:
    settings = _load(_config_path(args))
    from hotfolder import outcomes

    chosen = [Path(p).resolve() for p in args.paths] if args.paths else None
    moved = 0
    for path in outcomes.failed_files(settings.failed):
        if chosen is not None and path.resolve() not in chosen:
            continue
        relative = path.relative_to(settings.failed)
        final = outcomes.move_back_to_inbox(path, settings.inbox / relative)
        print(f"{relative} → {final}")
        moved += 1
    print(f"{moved} file(s) moved back to the inbox")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from hotfolder.demo import run_demo

    return run_demo(Path(args.dir).resolve(), port=args.port, exit_when_idle=args.exit_when_idle)


# -- parsing ----------------------------------------------------------------------------------


def _version() -> str:
    import importlib.metadata  # here, not at the top: only --version needs it, and every command paid for it

    try:
        return importlib.metadata.version("hotfolder")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked (argparse's own wants it up front)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        print(f"hotfolder {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotfolder", description="Turn a folder into an upload pipeline.")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-c", "--config", help=f"config file (default: $HOTFOLDER_CONFIG or {DEFAULT_CONFIG})")
        return p

    with_config(commands.add_parser(
        "run", help="run in the foreground until SIGTERM/SIGINT; SIGHUP re-reads the config")).set_defaults(
        func=cmd_run
    )
    with_config(commands.add_parser("once", help="process what is in the inbox, exit when idle")).set_defaults(
        func=cmd_once
    )
    status = with_config(commands.add_parser("status", help="jobs by step, failures with reasons"))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=20, help="how many failures to list")
    status.add_argument("--watch", type=float, nargs="?", const=2.0, default=None, metavar="SECONDS",
                        help="redraw every SECONDS (default 2) until Ctrl-C")
    status.set_defaults(func=cmd_status)
    retry = with_config(commands.add_parser("retry", help="move failed files back into the inbox"))
    retry.add_argument("paths", nargs="*", help="files under failed/ (default: all)")
    retry.set_defaults(func=cmd_retry)
    check = commands.add_parser("check-config", help="validate a config file without starting")
    check.add_argument("file")
    check.add_argument("--online", action="store_true",
                       help="also ask each target's vendor, with reads only, whether its credentials and field work")
    check.set_defaults(func=cmd_check_config)
    commands.add_parser("config-schema", help="print the config file's JSON Schema").set_defaults(
        func=cmd_config_schema
    )
    demo = commands.add_parser("demo", help="run against the built-in local simulator")
    demo.add_argument("--dir", default="hotfolder-demo", help="where the demo inbox/done/failed live")
    demo.add_argument("--port", type=int, default=8787, help="simulator port on 127.0.0.1 (0: any free port)")
    demo.add_argument("--exit-when-idle", action="store_true", help="stop once the sample files are processed")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as error:
        print(f"hotfolder: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
