"""Figure 6: start-up with many small files already in the inbox.

    python bench/startup_100k.py                      # 10,000 files
    python bench/startup_100k.py --files 100000       # the issue's figure

The inbox holds ``--files`` files of 1 KiB over ``--records`` Fulcrum records before
``python -m hotfolder run`` starts. Measured from the moment the process is started:

* time to the first upload: the first S3 PUT the simulator answers (its request log);
* time until every file is journaled: ``SELECT COUNT(*) FROM jobs`` polled read-only from here
  (WAL lets a reader look while the daemon writes) until it reaches ``--files``;
* peak RSS (``VmHWM``) up to that moment and for ``--linger`` seconds after it, while uploads go on.

Then SIGTERM; the uploads are not waited for (that is figure 4's business).

``settle`` is 1 s here (``--settle``). A file is settled once its size and mtime have not changed for
``settle`` seconds *from the moment the daemon first saw it*, so the first upload can never come
sooner than ``settle`` after start: with the shipped default of 5 s the 2 s target is out of reach
by design, whatever else the daemon does.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from pathlib import Path

from common import (
    KIB,
    MIB,
    DaemonProcess,
    Report,
    SandboxProcess,
    demo_target,
    make_small_files,
    parse_size,
    workdir,
    write_config,
)

FIRST_UPLOAD_S = 2.0
ALL_JOURNALED_S = 30.0
RSS_MB = 250


def journaled(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet, or the schema is being written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--size", type=parse_size, default=parse_size("1KB"))
    parser.add_argument("--settle", default="1s")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600, help="give up waiting after this many seconds")
    parser.add_argument("--linger", type=float, default=2.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    records = [f"rec-{n:05d}" for n in range(args.records)]
    with workdir("startup", args.keep) as root:
        site = root / "site"
        inbox = site / "inbox" / "fulcrum"
        started = time.perf_counter()
        make_small_files(lambda i: inbox / records[i % args.records], args.files, args.size)
        print(f"{args.files} files written in {time.perf_counter() - started:.1f} s", flush=True)
        with SandboxProcess(root / "sim", fulcrum_records=records) as sandbox:
            config = write_config(site, {"fulcrum": demo_target(sandbox.url, "fulcrum")}, settle=args.settle,
                                  workers=args.workers)
            journal = site / "state" / "journal.db"
            first_upload: float | None = None
            all_journaled: float | None = None
            counts: list[tuple[float, int]] = []
            with DaemonProcess("run", config, site / "daemon.log", sample_interval=0.1) as daemon:
                zero = daemon.started_at
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline and (first_upload is None or all_journaled is None):
                    if first_upload is None:
                        puts = [r["at"] for r in sandbox.requests()
                                if r["method"] == "PUT" and r["path"].startswith("/s3/")]
                        if puts:
                            first_upload = min(puts) - zero
                    if all_journaled is None:
                        count = journaled(journal)
                        counts.append((time.time() - zero, count))
                        if count >= args.files:
                            all_journaled = time.time() - zero
                    time.sleep(0.1)
                time.sleep(args.linger)
                peak = daemon.current_hwm()
                cpu = daemon.cpu_seconds
        progress = ", ".join(f"{t:.0f}s: {n}" for t, n in counts[:: max(1, len(counts) // 10)])
        print(f"journaled over time: {progress}", flush=True)

    report = Report(f"start-up with {args.files} files of {args.size / KIB:.0f} KiB in the inbox "
                    f"(settle {args.settle}, {args.workers} workers)")
    report.add("time to first upload", "not seen" if first_upload is None else f"{first_upload:.2f} s",
               target=f"≤ {FIRST_UPLOAD_S:g} s", met=first_upload is not None and first_upload <= FIRST_UPLOAD_S)
    report.add("time until all are journaled",
               f"not within {args.timeout:g} s ({counts[-1][1]} journaled)" if all_journaled is None
               else f"{all_journaled:.2f} s", target=f"≤ {ALL_JOURNALED_S:g} s",
               met=all_journaled is not None and all_journaled <= ALL_JOURNALED_S)
    report.add("peak RSS", f"{peak / MIB:.0f} MiB", target=f"≤ {RSS_MB} MB", met=peak <= RSS_MB * MIB)
    report.notes.append(f"daemon CPU until then: {cpu:.1f} s")
    report.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
