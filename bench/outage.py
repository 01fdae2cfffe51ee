"""Issue 12, item 5: what a vendor outage costs the vendor, with and without the per-target circuit.

One vendor (the Fulcrum target) answers every request 503 for ``--outage`` seconds (its API and its
S3 alike), while ``--files`` of its files wait; another target (EspoCRM notes) gets ``--others`` files
at the same moment. Then the vendor comes back. Counted: the requests the vendor received during the
outage, the time to the last Fulcrum file done after it came back, and when the other target's files
were done (they must not wait for the outage). Every file must end in done/, attached exactly once.

Both runs happen in this invocation, the baseline first: "without" makes the circuit unreachable
(each job retries on its own, as before issue 12), "with" is the daemon as shipped. The retry
settings are the daemon's defaults (attempts 8, backoff 2s, max_backoff 10m) and 4 workers.

    .venv/bin/python bench/outage.py [--files 15] [--outage 15] [--others 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "daemon"))

from hotfolder import demo, limits  # noqa: E402
from hotfolder.config import load_settings  # noqa: E402
from hotfolder.events import TargetPaused, TargetResumed  # noqa: E402
from hotfolder.logsetup import configure_logging  # noqa: E402
from hotfolder.sandbox import Sandbox  # noqa: E402
from hotfolder.service import Daemon  # noqa: E402

VENDOR_PATHS = r"^/api/v2/|^/s3/fulcrum"  # the Fulcrum target's API and S3
RECORD = "rec-1001"
NOTE = "note-1"


def _config(root: Path, url: str) -> Path:
    targets = demo.demo_targets(url)
    config: dict[str, Any] = {
        "inbox": str(root / "inbox"), "done": str(root / "done"), "failed": str(root / "failed"),
        "journal": str(root / "state" / "journal.db"), "log_level": "warning",
        "watch": {"settle": "200ms", "check_complete": False},
        "workers": 4,
        "targets": {name: targets[name] for name in ("fulcrum", "espocrm-notes")},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _drop(root: Path, target: str, record: str, name: str, data: bytes) -> None:
    folder = root / "inbox" / target / record
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.partial"
    temp.write_bytes(data)
    os.replace(temp, folder / name)


def _wait(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def run_once(circuit: bool, files: int, others: int, outage: float) -> dict[str, Any]:
    limits_failures = limits.CIRCUIT_FAILURES
    if not circuit:
        limits.CIRCUIT_FAILURES = 10**9  # never trips: each job retries on its own
    try:
        with tempfile.TemporaryDirectory(prefix="hotfolder-outage-") as scratch:
            return _measure(Path(scratch), files, others, outage)
    finally:
        limits.CIRCUIT_FAILURES = limits_failures


def _measure(scratch: Path, files: int, others: int, outage: float) -> dict[str, Any]:
    sandbox = Sandbox(scratch / "sandbox")
    sandbox.start()
    try:
        demo.seed(sandbox, scratch / "seed-inbox")
        root = scratch / "site"
        root.mkdir()
        daemon = Daemon(load_settings(_config(root, sandbox.url)))
        events: list[tuple[float, object]] = []
        daemon.events.subscribe(lambda e: events.append((time.monotonic(), e))
                                if isinstance(e, TargetPaused | TargetResumed) else None)
        daemon.start()
        try:
            sandbox.add_fault("*", VENDOR_PATHS, status=503, count=1_000_000, body="maintenance")
            down_at = time.monotonic()
            sent = {f"scan-{n:02}.pdf": b"%PDF-1.4 " + os.urandom(3000) for n in range(files)}
            for name, data in sent.items():
                _drop(root, "fulcrum", RECORD, name, data)
            notes = {f"note-{n}.txt": os.urandom(1000) for n in range(others)}
            for name, data in notes.items():
                _drop(root, "espocrm-notes", NOTE, name, data)
            others_done = None
            while time.monotonic() < down_at + outage:
                if others_done is None and all((root / "done" / "espocrm-notes" / NOTE / n).exists() for n in notes):
                    others_done = time.monotonic() - down_at
                time.sleep(0.05)
            sandbox.clear_faults()
            up_at = time.monotonic()
            _wait(lambda: all((root / "done" / "fulcrum" / RECORD / n).exists() for n in sent), 900)
            last_done = time.monotonic() - up_at
            if others_done is None:
                others_done = float("nan")
        finally:
            daemon.stop()
        log = sandbox.requests()
        during = [r for r in log if r["status"] == 503]
        held = sandbox.fulcrum.record(RECORD)["form_values"].get(demo.FIELD) or []
        held_bytes = sorted(sandbox.fulcrum.attachment_bytes(item["attachment_id"]) for item in held)
        failed = [p for p in (root / "failed").rglob("*") if p.is_file()]
        return {
            "requests_during_outage": len(during),
            "last_done_after_return": last_done,
            "others_done_at": others_done,
            "attached_once": held_bytes == sorted(sent.values()),
            "failed": len(failed),
            "pauses": sum(1 for _t, e in events if isinstance(e, TargetPaused) and e.cause == "outage"),
            "resumes": sum(1 for _t, e in events if isinstance(e, TargetResumed)),
        }
    finally:
        sandbox.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=15)
    parser.add_argument("--others", type=int, default=5)
    parser.add_argument("--outage", type=float, default=15.0)
    args = parser.parse_args()
    configure_logging("error", stream=sys.stderr)
    rows = []
    for circuit in (False, True):
        result = run_once(circuit, args.files, args.others, args.outage)
        rows.append(("with the circuit" if circuit else "without (baseline)", result))
        print(f"{rows[-1][0]}: {result}", flush=True)
    print()
    print(f"One vendor down {args.outage:g} s (503 on every request), {args.files} of its files waiting, "
          f"{args.others} files of another target; 4 workers, default retry settings.")
    print()
    print("| | requests to the vendor during the outage | last file done, after its return | other target "
          "done at | every file done, attached once | outage pauses / resumes |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        ok = "yes" if r["attached_once"] and not r["failed"] else f"NO (failed {r['failed']})"
        print(f"| {label} | {r['requests_during_outage']} | {r['last_done_after_return']:.1f} s | "
              f"{r['others_done_at']:.1f} s | {ok} | {r['pauses']} / {r['resumes']} |")
    with_circuit = rows[1][1]["requests_during_outage"]
    print()
    print(f"target: at most about 10 requests; with the circuit: {with_circuit} -> "
          f"{'MET' if with_circuit <= 10 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
