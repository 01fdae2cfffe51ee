"""Figure 5: pickup latency, from a file's last write to its presign request, native and polling.

    python bench/pickup_latency.py                    # 200 files per mode, settle 1s, poll_interval 1s
    python bench/pickup_latency.py --settle 5s --poll-interval 2s

``python -m hotfolder run`` watches an inbox (Fulcrum target); this script writes files into it one at a
time, the way a scanner does (create with the final name, write in pieces, close), ``--gap`` apart,
so that the workers are idle when each file becomes ready and the figure is pickup, not queueing.

Per file: last write = ``time.time()`` right after close; presign request = the moment the daemon's
presign step began (its "step done" log line's timestamp minus its duration; same machine, same
clock). The "baseline" is the configured wait: ``settle`` natively, ``settle + poll_interval`` when
polling (a file may be written just after a poll). Target: p50 and p95 within 0.5 s of it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import (
    MIB,
    DaemonProcess,
    Report,
    SandboxProcess,
    demo_target,
    percentile,
    step_events,
    wait_until,
    workdir,
    write_config,
)

from hotfolder.options import parse_duration

MARGIN = 0.5
RECORDS = 10


def drop(path: Path, size: int) -> float:
    """Write ``path`` (a PDF, so that the tail test has its work to do) in 4 pieces with its final name;
    return the time of the last write (after close)."""
    piece = os.urandom(size // 4)
    with open(path, "wb") as handle:
        handle.write(b"%PDF-1.4\n")
        for _ in range(4):
            handle.write(piece)
            handle.flush()
        handle.write(b"\n%%EOF\n")
    return time.time()


def run_mode(
    root: Path, url: str, method: str, settle: str, poll: str, files: int, gap: float, readiness: bool
) -> list[float]:
    site = root / f"{method}-{'checked' if readiness else 'unchecked'}"
    inbox = site / "inbox" / "fulcrum"
    for n in range(RECORDS):
        (inbox / f"rec-{n:03d}").mkdir(parents=True, exist_ok=True)
    config = write_config(site, {"fulcrum": demo_target(url, "fulcrum")}, method=method, settle=settle,
                          poll_interval=poll, workers=4,
                          log_level="debug",  # per-step lines ("step done") are debug
                          watch_extra={"check_writers": readiness, "check_complete": readiness})
    written: dict[str, float] = {}
    with DaemonProcess("run", config, site / "daemon.log", sample_interval=0.5) as daemon:
        if not wait_until(lambda: any(e.get("event") == "watching" for e in daemon.events()), 30):
            raise SystemExit(f"the daemon did not start; see {daemon.log}")
        time.sleep(0.5)  # let the start scan of the (empty) inbox finish
        for index in range(files):
            name = f"pickup-{index:04d}.pdf"
            written[name] = drop(inbox / f"rec-{index % RECORDS:03d}" / name, 64 * 1024)
            time.sleep(gap)
        wait_for = parse_duration(settle, "settle") + parse_duration(poll, "poll") + 10
        if not wait_until(lambda: len(step_events(daemon.events(), "presign")) >= files, wait_for, 0.5):
            raise SystemExit(f"only {len(step_events(daemon.events(), 'presign'))} of {files} presigned")
        events = daemon.events()
        print(f"{method}: daemon peak RSS {daemon.current_hwm() / MIB:.0f} MiB", flush=True)
    latencies = []
    for event in step_events(events, "presign"):
        began = event["t"] - float(event["duration"])
        latencies.append(began - written[event["file"]])
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--settle", default="1s")
    parser.add_argument("--poll-interval", default="1s")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between two files (default 0.1)")
    parser.add_argument("--modes", default="native,polling")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--readiness", default="on", help="on, off, or both (side by side): the writer and tail tests")
    args = parser.parse_args()

    settle = parse_duration(args.settle, "settle")
    poll = parse_duration(args.poll_interval, "poll_interval")
    report = Report(f"pickup latency, last write → presign request, {args.files} files per mode")
    with workdir("pickup", args.keep) as root:
        records = [f"rec-{n:03d}" for n in range(RECORDS)]
        with SandboxProcess(root / "sim", fulcrum_records=records) as sandbox:
            checks = {"on": [True], "off": [False], "both": [False, True]}[args.readiness]
            for method, readiness in ((m, r) for m in args.modes.split(",") for r in checks):
                latencies = run_mode(root, sandbox.url, method, args.settle, args.poll_interval, args.files, args.gap,
                                     readiness)
                label = f"{method}{'' if readiness else ' (readiness checks off)'}"
                allowed = settle + (poll if method == "polling" else 0.0)
                p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
                print(f"{label}: p50 {p50:.3f} s, p95 {p95:.3f} s, max {max(latencies):.3f} s", flush=True)
                baseline = f"settle {settle:g} s" + (f" + poll {poll:g} s" if method == "polling" else "")
                for which, value in (("p50", p50), ("p95", p95)):
                    report.add(f"{label} {which}", f"{value:.2f} s", baseline, f"{value - allowed:+.2f} s",
                               f"≤ +{MARGIN} s", value <= allowed + MARGIN)
    report.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
