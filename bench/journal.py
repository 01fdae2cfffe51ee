"""Figure 8: the journal. Durable step transitions per second under load, and restart time with many
finished jobs.

    python bench/journal.py                           # 5 s of load; restart with 100,000 finished jobs
    python bench/journal.py --finished 1000000        # the issue's figure

1. Transitions per second. ``hotfolder.journal.Journal`` in this process, on the real disk (``/tmp`` is
   ext4 here), ``--threads`` threads (the daemon's workers) each walking their own jobs through
   hash → presign → upload → finalize → link → to_done → done with ``Journal.record``, exactly the
   call the runner makes after each step (and ``add_job`` for the intake). Nothing else runs, so this
   is the journal's ceiling; under a real load the workers also spend time on HTTP. Beside it, two
   floors of this disk measured in the same run: bare ``fdatasync`` per second (one durable commit
   can cost no less), and the same UPDATEs with SQLite's own settings but ``--batch`` steps per
   COMMIT, which is what "batch the syncs" (group commit) would buy.
2. Restart. A journal with ``--finished`` finished jobs (rows as the runner leaves them: digests,
   vendor ids, outcome path), finished evenly over the last ``--days`` days, is built; the daemon's
   own archival pass then moves those older than ``--archive-after`` days into the archive beside it
   (timed: a first pass after an upgrade moves nearly all of them at once; later passes move six
   hours' worth). Then timed: ``Journal(path)`` in a fresh process (its open runs ``PRAGMA
   quick_check``, the schema script and ``user_version``) with each of those parts timed alone, and
   ``python -m hotfolder run`` from start to its "watching" log line, after a clean stop and after a
   crash, with the files in the page cache and (as root) after dropping it, as after a reboot.
   ``--days 0`` finishes every job just now, so nothing is archived: the figure without the archive.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from common import (
    MIB,
    PYTHON,
    DaemonProcess,
    Report,
    SandboxProcess,
    demo_target,
    run_threads_for,
    wait_until,
    workdir,
    write_config,
)

from hotfolder.journal import Journal, StepRecord
from hotfolder.journal.archive import archive_path
from hotfolder.pipeline import State

TARGET_RATE = 2000.0
TARGET_RESTART_S = 2.0
WALK = (State.PRESIGN, State.UPLOAD, State.FINALIZE, State.LINK, State.TO_DONE, State.DONE)
DIGESTS = {"size": 102400, "mtime_ns": 1_700_000_000_000_000_000, "md5": None, "sha256": "ab" * 32}


# --- 1. transitions per second ------------------------------------------------------------------


def transitions(path: Path, threads: int, seconds: float) -> tuple[float, float]:
    """(step records per second, add_job per second) with ``threads`` threads for ``seconds``."""
    journal = Journal(path)
    stop = threading.Event()
    counts = [0] * threads
    adds = [0] * threads

    def worker(number: int) -> None:
        index = 0
        while not stop.is_set():
            index += 1
            job = journal.add_job(target="fulcrum", record=f"rec-{number}", group=None, name=f"f{index}.bin",
                                  relpath=f"fulcrum/rec-{number}/t{number}-{index}.bin", size=102400,
                                  mtime_ns=index)
            assert job is not None
            adds[number] += 1
            for state in WALK:
                if stop.is_set():
                    return
                journal.record(job.id, StepRecord(
                    state=state, attempts=0, digests=DIGESTS if state is State.PRESIGN else None,
                    vendor_update={"attachment_id": f"a-{number}-{index}"} if state is State.UPLOAD else None,
                    outcome_path=f"/done/fulcrum/rec-{number}/f{index}.bin" if state is State.TO_DONE else None,
                ))
                counts[number] += 1

    elapsed = run_threads_for(worker, threads, seconds, stop)
    journal.close()
    return sum(counts) / elapsed, sum(adds) / elapsed


def fdatasync_rate(folder: Path, seconds: float = 2.0) -> float:
    """Durable 4 KiB appends per second on this disk: the price of one commit, at best."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    count, started = 0, time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return count / (time.perf_counter() - started)


def batched_rate(path: Path, batch: int, seconds: float = 3.0) -> float:
    """Step UPDATEs per second on a journal file with the daemon's pragmas, ``batch`` per COMMIT."""
    Journal(path).close()  # the daemon's schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs (target, name, relpath, size, mtime_ns, state, created_at, updated_at) "
        "VALUES ('fulcrum', 'f', ?, 1, 1, 'hash', ?, ?)", ((f"batch/{n}", now, now) for n in range(10_000)))
    conn.execute("COMMIT")
    count, started, job = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(batch):
            job = job % 10_000 + 1
            conn.execute("UPDATE jobs SET state = 'upload', attempts = 0, updated_at = ? WHERE id = ?",
                         (time.time(), job))
        conn.execute("COMMIT")
        count += batch
    conn.close()
    return count / (time.perf_counter() - started)


# --- 2. restart ---------------------------------------------------------------------------------


def build_finished(path: Path, jobs: int, days: float) -> None:
    """``jobs`` rows as finished jobs look after a real run, finished evenly over the last ``days``
    days, written fast (no fsync: it is set-up)."""
    Journal(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    now = time.time()
    spacing = days * 86400 / jobs

    def rows():  # type: ignore[no-untyped-def]
        for n in range(jobs):
            record = f"rec-{n % 1000:04d}"
            relpath = f"fulcrum/{record}/scan-{n:07d}.pdf"
            yield (
                "fulcrum", record, f"scan-{n:07d}.pdf", relpath, 102400 + n, 1_700_000_000_000_000_000 + n,
                json.dumps({"md5": None, "mtime_ns": 1_700_000_000_000_000_000 + n, "sha256": os.urandom(32).hex(),
                            "size": 102400 + n}),
                "done", json.dumps({"attachment_id": os.urandom(16).hex(), "etag": os.urandom(16).hex(),
                                    "finalized": True, "linked": True}),
                f"/srv/scans/done/{relpath}", *(now - (jobs - n) * spacing - 1 + extra for extra in (0, 1, 1)),
            )

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO jobs (target, record, name, relpath, size, mtime_ns, digests, state, vendor, outcome_path, "
        "created_at, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


_OPEN_TIMING = r"""
import sqlite3, sys, time
from pathlib import Path
path = sys.argv[1]
t = time.perf_counter()
from hotfolder.journal import Journal
from hotfolder.journal.opening import SCHEMA
imported = time.perf_counter() - t
t = time.perf_counter(); j = Journal(Path(path)); opened = time.perf_counter() - t
t = time.perf_counter(); j.unfinished_count(); j.ready_ids(time.time(), 8); queries = time.perf_counter() - t
j.close()
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
t = time.perf_counter(); conn.execute("PRAGMA quick_check").fetchone(); quick = time.perf_counter() - t
t = time.perf_counter(); conn.executescript(SCHEMA); schema = time.perf_counter() - t
print(opened, quick, schema, queries)
"""


def restart_figures(root: Path, jobs: int, days: float, archive_after: float) -> dict[str, float]:
    site = root / "restart"
    journal = site / "state" / "journal.db"
    journal.parent.mkdir(parents=True)
    started = time.perf_counter()
    build_finished(journal, jobs, days)
    built_size = journal.stat().st_size
    print(f"built a journal of {jobs} finished jobs over {days:g} days ({built_size / MIB:.0f} MiB) "
          f"in {time.perf_counter() - started:.1f} s", flush=True)
    opened = Journal(journal)  # not as the daemon: no clean stop is recorded, the first start below is unclean
    started = time.perf_counter()
    archived = opened.archive_finished(archive_after * 86400)
    archive_seconds = time.perf_counter() - started
    opened.close()
    archive = archive_path(journal)
    archive_size = archive.stat().st_size if archive.exists() else 0
    print(f"archival pass: {archived} jobs older than {archive_after:g} days moved in {archive_seconds:.1f} s; "
          f"journal now {journal.stat().st_size / MIB:.0f} MiB, archive {archive_size / MIB:.0f} MiB", flush=True)
    output = subprocess.run([PYTHON, "-c", _OPEN_TIMING, str(journal)], capture_output=True, text=True, check=True)
    opened_s, quick, schema, queries = (float(x) for x in output.stdout.split())
    with SandboxProcess(root / "sim") as sandbox:
        config = write_config(site, {"fulcrum": demo_target(sandbox.url, "fulcrum")})
        # The journal was built outside the daemon: no clean stop is recorded, so this start checks
        # the whole file, as after a crash; it ends with SIGTERM, a clean stop.
        unclean_warm = time_to_watching(config, site / "daemon-1.log")
        clean_warm = time_to_watching(config, site / "daemon-2.log", kill=True)  # then killed: unclean
        # Cold: as after a reboot, nothing in the page cache (needs root; else not measured).
        unclean_cold = time_to_watching(config, site / "daemon-3.log") if drop_page_cache() else float("nan")
        clean_cold = time_to_watching(config, site / "daemon-4.log") if drop_page_cache() else float("nan")
    return {"open": opened_s, "quick_check": quick, "schema": schema, "queries": queries,
            "unclean_warm": unclean_warm, "clean_warm": clean_warm, "unclean_cold": unclean_cold,
            "clean_cold": clean_cold, "size": journal.stat().st_size, "built_size": built_size,
            "archived": archived, "archive_seconds": archive_seconds, "archive_size": archive_size}


def time_to_watching(config: Path, log: Path, *, kill: bool = False) -> float:
    """Seconds from starting `hotfolder run` to its "watching" line; the daemon is then stopped
    with SIGTERM (a clean stop) or, with ``kill``, SIGKILL (the next start sees an unclean one)."""
    with DaemonProcess("run", config, log) as daemon:
        if not wait_until(lambda: any(e.get("event") == "watching" for e in daemon.events()), 300, 0.02):
            raise SystemExit(f"the daemon did not start; see {daemon.log}")
        watching = next(e["t"] for e in daemon.events() if e.get("event") == "watching")
        if kill:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(60)
        return watching - daemon.started_at


def drop_page_cache() -> bool:
    """Write dirty pages out and drop the page cache; False if this user may not."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=16, help="steps per COMMIT in the group-commit floor")
    parser.add_argument("--finished", type=int, default=100_000, help="finished jobs for the restart figure")
    parser.add_argument("--days", type=float, default=365.0, help="the finished jobs finished over this many days")
    parser.add_argument("--archive-after", type=float, default=30.0, help="days (the daemon's archive_after)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    with workdir("journal", args.keep) as root:
        rate, adds = transitions(root / "load.db", args.threads, args.seconds)
        print(f"{rate:.0f} step records/s, {adds:.0f} add_job/s with {args.threads} threads", flush=True)
        fsyncs = fdatasync_rate(root)
        single = batched_rate(root / "batch1.db", 1)
        batched = batched_rate(root / "batchN.db", args.batch)
        print(f"floors: fdatasync {fsyncs:.0f}/s, UPDATE+COMMIT {single:.0f}/s, {args.batch} per COMMIT "
              f"{batched:.0f}/s", flush=True)
        restart = restart_figures(root, args.finished, args.days, args.archive_after)

    report = Report(
        f"journal: {args.threads} threads for {args.seconds:g} s; restart with {args.finished} finished jobs "
        f"over {args.days:g} days, archive_after {args.archive_after:g} days"
    )
    report.add("durable step transitions (Journal.record)", f"{rate:.0f}/s",
               f"bare UPDATE+COMMIT {single:.0f}/s; fdatasync {fsyncs:.0f}/s", f"{rate / single:.2f}",
               f"≥ {TARGET_RATE:g}/s", rate >= TARGET_RATE)
    report.add(f"what batching would buy: {args.batch} UPDATEs per COMMIT", f"{batched:.0f}/s")
    report.add("job intake (Journal.add_job) alongside", f"{adds:.0f}/s")
    for key, label in (("clean_warm", "after a clean stop, warm page cache"),
                       ("clean_cold", "after a clean stop, cold page cache (as after a reboot)"),
                       ("unclean_warm", "after a crash (whole-file check), warm page cache"),
                       ("unclean_cold", "after a crash (whole-file check), cold page cache")):
        seconds = restart[key]
        measured = seconds == seconds  # NaN when the page cache could not be dropped
        report.add(f"restart, `hotfolder run` start → \"watching\": {label}",
                   f"{seconds:.2f} s" if measured else "not measured (needs root)",
                   target=f"≤ {TARGET_RESTART_S:g} s", met=seconds <= TARGET_RESTART_S if measured else None)
    report.add("restart: Journal(path) open", f"{restart['open']:.2f} s")
    report.add("  of which PRAGMA quick_check", f"{restart['quick_check']:.2f} s")
    report.add("  of which the schema script", f"{restart['schema']:.3f} s")
    report.add("  unfinished_count + ready_ids", f"{restart['queries']:.3f} s")
    report.add("archival pass (Journal.archive_finished)", f"{restart['archived']} jobs in "
               f"{restart['archive_seconds']:.1f} s")
    report.notes.append(f"journal file {restart['built_size'] / MIB:.0f} MiB as built, "
                        f"{restart['size'] / MIB:.0f} MiB after the archival pass; archive "
                        f"{restart['archive_size'] / MIB:.0f} MiB")
    report.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
