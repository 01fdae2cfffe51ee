"""Figure 14: the journal shared by several daemons (PostgreSQL) beside the SQLite journal, same run.

    python bench/shared_journal.py                      # all three parts
    python bench/shared_journal.py --parts transitions --seconds 10

1. ``transitions``: durable step transitions per second, each journal in this process, ``--threads``
   threads (the daemon's workers) each taking a new job (intake, then the claim the runner makes with
   ``ready_ids``) and walking it presign → upload → finalize → link → to_done → done with ``record``,
   the runner's calls. SQLite: a file on this disk; PostgreSQL: a private cluster (``tests/postgres.py``,
   ``fsync=on``, ``synchronous_commit=on``) on the same disk, over TCP on 127.0.0.1. Run one after the
   other in the same invocation: the ratio is the figure.
2. ``takeover``: two ``hotfolder run`` nodes on one inbox; node A takes a file and is held in its link
   (a delay fault at the simulator), node B waits; A is killed (``kill -9``). Timed: from the kill to B's
   claim of the job (the ``claims`` row), and to the job's finish. A lease ends between two thirds of a
   lease and a whole lease after the kill (it was renewed every third), then B claims it at its next look
   (idle workers look at least every second).
3. ``nodes``: ``--files`` small files over the demo's Fulcrum records with ``--latency`` per vendor
   request, processed by 1, 2 and 3 nodes (4 workers each) on PostgreSQL, by one node on SQLite as the
   baseline, and by one SQLite node with as many workers as the most nodes have together (what more
   nodes add that more workers would not); files per second from the first drop to the last file in done/.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import yaml
from common import run_threads_for

from hotfolder.demo import DEMO_RECORDS, FIELD, seed
from hotfolder.journal import Journal, JournalBackend, NewJob, StepRecord
from hotfolder.journal.postgres import PostgresJournal
from hotfolder.pipeline import State
from hotfolder.sandbox import Sandbox
from tests.harness import ROOT, env_for_daemon
from tests.postgres import PostgresServer, start_postgres

WALK = (State.PRESIGN, State.UPLOAD, State.FINALIZE, State.LINK, State.TO_DONE, State.DONE)
DIGESTS = {"size": 102400, "mtime_ns": 1, "md5": None, "sha256": "ab" * 32}


# --- 1. transitions -----------------------------------------------------------------------------


def transitions(journal: JournalBackend, threads: int, seconds: float) -> float:
    """Step records per second (claims and intake not counted, but paid) with ``threads`` threads."""
    stop = threading.Event()
    counts = [0] * threads
    claim_lock = threading.Lock()  # the runner claims under its own lock, one id at a time
    held: set[int] = set()

    def worker(number: int) -> None:
        index = 0
        while not stop.is_set():
            index += 1
            relpath = f"fulcrum/rec-{number}/t{number}-{index}.bin"
            journal.add_jobs([NewJob("fulcrum", f"rec-{number}", None, f"t{index}.bin", relpath, 102400, index)])
            with claim_lock:
                ids = journal.ready_ids(time.time(), 1, held)
                if not ids:
                    continue
                held.add(ids[0])
            job_id = ids[0]
            for state in WALK:
                if stop.is_set():
                    return
                journal.check_lease(job_id)
                journal.record(job_id, StepRecord(
                    state=state, attempts=0, digests=DIGESTS if state is State.PRESIGN else None,
                    vendor_update={"attachment_id": f"a-{number}-{index}"} if state is State.UPLOAD else None,
                    outcome_path=f"/done/{relpath}" if state is State.TO_DONE else None))
                counts[number] += 1
            with claim_lock:
                held.discard(job_id)

    elapsed = run_threads_for(worker, threads, seconds, stop)
    return sum(counts) / elapsed


def part_transitions(server: PostgresServer, folder: Path, args: argparse.Namespace) -> None:
    print(f"1. step transitions per second, {args.threads} threads, {args.seconds:g} s each, same run:")
    rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    for round_number in range(args.rounds):
        sqlite = Journal(folder / f"t{round_number}.db")
        rates["sqlite"].append(transitions(sqlite, args.threads, args.seconds))
        sqlite.close()
        shared = PostgresJournal(server.url(server.create_database()), node="bench", lease=30.0, daemon=True)
        rates["postgresql"].append(transitions(shared, args.threads, args.seconds))
        shared.close()
        print(f"   round {round_number + 1}: SQLite {rates['sqlite'][-1]:.0f}/s, "
              f"PostgreSQL {rates['postgresql'][-1]:.0f}/s "
              f"({rates['postgresql'][-1] / rates['sqlite'][-1]:.2f}x)", flush=True)
    best = {name: max(values) for name, values in rates.items()}
    print(f"   best: SQLite {best['sqlite']:.0f}/s, PostgreSQL {best['postgresql']:.0f}/s, "
          f"ratio {best['postgresql'] / best['sqlite']:.2f}x")


# --- daemons ------------------------------------------------------------------------------------


def node_config(root: Path, name: str, journal: str, sandbox_url: str, *, lease: float, workers: int = 4) -> Path:
    config: dict[str, Any] = {
        "inbox": str(root / "inbox"), "done": str(root / "done"), "failed": str(root / "failed"),
        "journal": journal, "log_level": "info", "workers": workers,
        "watch": {"method": "native", "settle": "100ms", "poll_interval": "100ms", "rescan": "1m",
                  "check_complete": False},
        "retry": {"attempts": 20, "backoff": "50ms", "max_backoff": "500ms"},
        "node": {"name": name, "lease": f"{lease:g}s", "state": str(root / "state")},
        "targets": {"fulcrum": {"vendor": "fulcrum", "url": sandbox_url, "token": "sandbox-token", "field": FIELD,
                                "timeout": "60s"}},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_node(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "-c", str(config)], env=env_for_daemon(),
                            cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def drop(inbox: Path, relpath: str, data: bytes) -> None:
    path = inbox / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.partial"
    temp.write_bytes(data)
    os.replace(temp, path)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


# --- 2. takeover --------------------------------------------------------------------------------


def part_takeover(server: PostgresServer, folder: Path, args: argparse.Namespace) -> None:
    print(f"2. takeover after kill -9 of the node holding a job (lease {args.lease:g} s), {args.takeovers} times:")
    for number in range(args.takeovers):
        phase = 0.2 + 0.6 * number / max(1, args.takeovers - 1)  # when in the renewal cycle the kill lands
        claim, done = one_takeover(server, folder / f"takeover-{number}", args.lease, phase)
        print(f"   takeover {number + 1}: kill → claim by b {claim:.2f} s, kill → done {done:.2f} s", flush=True)


def one_takeover(server: PostgresServer, root: Path, lease: float, phase: float) -> tuple[float, float]:
    """Seconds from the kill of node a to node b's claim of a's job, and to the job's finish."""
    root.mkdir()
    url = server.url(server.create_database())
    with Sandbox(root / "simulator") as sandbox:
        empty_demo_inbox(sandbox, root / "inbox")
        a = start_node(node_config(root, "a", url, sandbox.url, lease=lease), root / "a.log")
        b: subprocess.Popen[bytes] | None = None
        audit = PostgresJournal(url, node="bench")
        try:
            wait(lambda: b"watching" in (root / "a.log").read_bytes(), 30, "node a to start")
            sandbox.add_fault("PUT", r"^/api/v2/records/", action="delay", delay=120.0)
            drop(root / "inbox", f"fulcrum/{DEMO_RECORDS[0]}/held.pdf", b"%PDF-1.4 " + os.urandom(10_000))
            wait(lambda: not sandbox.faults.pending(), 30, "a's link to be held at the vendor")
            b = start_node(node_config(root, "b", url, sandbox.url, lease=lease), root / "b.log")
            wait(lambda: b"watching" in (root / "b.log").read_bytes(), 30, "node b to start")
            time.sleep(lease * phase)
            (job,) = audit.jobs()
            killed = time.time()
            a.send_signal(signal.SIGKILL)
            a.wait(10)
            claims = wait(lambda: [at for node, at in _claims(audit, job.id) if node == "b"], 3 * lease + 10,
                          "b's claim")
            finished = wait(lambda: audit.get(job.id).finished_at, 60, "the job to finish")
            return claims[0] - killed, finished - killed
        finally:
            audit.close()
            stop_all([p for p in (a, b) if p is not None])


def empty_demo_inbox(sandbox: Sandbox, inbox: Path) -> None:
    """The demo's records at the simulator, without its sample file."""
    seed(sandbox, inbox)
    for sample in inbox.rglob("*"):
        if sample.is_file():
            sample.unlink()


def _claims(journal: PostgresJournal, job_id: int) -> list[tuple[str, float]]:
    with journal._pool.connection() as conn:
        rows = conn.execute("SELECT node, claimed_at FROM claims WHERE job_id = %s ORDER BY generation",
                            (job_id,)).fetchall()
    return [(node, float(at)) for node, at in rows]


# --- 3. files per second with 1, 2, 3 nodes -----------------------------------------------------


def part_nodes(server: PostgresServer, folder: Path, args: argparse.Namespace) -> None:
    print(f"3. {args.files} files of 1-16 KB over {len(DEMO_RECORDS)} records, {args.latency * 1000:g} ms per "
          "vendor request, 4 workers per node, files per second (first drop to last file in done/):")
    most = 4 * max(args.nodes)
    variants = [("SQLite, 1 node", 1, False, 4)] + [(f"PostgreSQL, {n} node(s)", n, True, 4) for n in args.nodes]
    variants.append((f"SQLite, 1 node with {most} workers", 1, False, most))  # as many workers as the most nodes
    rates: dict[str, float] = {}
    for index, (label, count, shared, workers) in enumerate(variants):
        root = folder / f"nodes-{index}"
        root.mkdir()
        journal = server.url(server.create_database()) if shared else str(root / "state" / "journal.db")
        rates[label] = files_per_second(root, journal, count, args.files, args.latency, workers)
        print(f"   {label}: {rates[label]:.1f} files/s", flush=True)
    base = rates["SQLite, 1 node"]
    print("   ratios to SQLite, 1 node: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in rates.items()))


def files_per_second(root: Path, journal: str, count: int, files: int, latency: float, workers: int) -> float:
    with Sandbox(root / "simulator") as sandbox:
        empty_demo_inbox(sandbox, root / "inbox")
        if latency:
            sandbox.add_fault("*", r"^/(api|s3)/", action="delay", delay=latency, count=10_000_000)
        names = [f"n{number}" for number in range(count)]
        nodes = [start_node(node_config(root, name, journal, sandbox.url, lease=30.0, workers=workers),
                            root / f"{name}.log") for name in names]
        try:
            for name in names:
                log = root / f"{name}.log"
                wait(lambda log=log: b"watching" in log.read_bytes(), 60, f"{name} to start")
            rng = random.Random(7)
            started = time.monotonic()
            for number in range(files):
                data = b"%PDF-1.4 " + rng.randbytes(rng.randint(1_000, 16_000))
                drop(root / "inbox", f"fulcrum/{DEMO_RECORDS[number % len(DEMO_RECORDS)]}/f{number:05d}.pdf", data)
            done = root / "done"
            wait(lambda: sum(1 for _ in done.rglob("*.pdf")) >= files, 900, "every file done")
            return files / (time.monotonic() - started)
        finally:
            stop_all(nodes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="transitions,takeover,nodes")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lease", type=float, default=6.0)
    parser.add_argument("--takeovers", type=int, default=3)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per vendor request")
    parser.add_argument("--nodes", default="1,2,3")
    args = parser.parse_args()
    args.nodes = [int(n) for n in args.nodes.split(",")]
    parts = args.parts.split(",")
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {' '.join(sys.argv)}")
    server = start_postgres()
    with tempfile.TemporaryDirectory(prefix="hotfolder-bench-", dir="/var/tmp") as temp:
        folder = Path(temp)
        try:
            if "transitions" in parts:
                part_transitions(server, folder, args)
            if "takeover" in parts:
                part_takeover(server, folder, args)
            if "nodes" in parts:
                part_nodes(server, folder, args)
        finally:
            server.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
