"""Figure 3: the hash step's throughput (all digests a vendor needs, one read pass) against hashlib alone.

    python bench/hashing.py                   # 512 MiB file, 3 rounds
    python bench/hashing.py --size 1GiB

Two parts:

1. Throughput, in process: ``hotfolder.transfer.hash_file(path, digests)``, the function the hash step
   calls, against a bare loop of 1 MiB reads into ``hashlib.md5`` (the baseline the issue names) over
   the same file, for each digest set a vendor asks for (Visibuild: MD5; the others: SHA-256). The
   file is read once beforehand so every pass reads from the page cache: the figure is hashing, not
   the disk (uncached reads run at about 680 MB/s here, above MD5's 630 MB/s anyway). Rounds
   alternate baseline and daemon; the best of each is kept.
2. Read passes, through the daemon's real entry point: ``python -m hotfolder once`` uploads one file per
   vendor style, and ``rchar`` from ``/proc/<pid>/io`` (bytes read by the process, files and sockets)
   is divided by the file size. Hash + upload is 2 passes; a second hashing pass would show as 3.
   Imports and API answers add a few MB, hence the large file.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

from common import (
    MIB,
    DaemonProcess,
    Report,
    SandboxProcess,
    demo_target,
    human_size,
    mb_s,
    parse_size,
    workdir,
    write_config,
    write_file,
)

from hotfolder.transfer import hash_file

TARGET_RATIO = 0.9


def baseline(path: Path, algorithms: tuple[str, ...]) -> float:
    """Seconds for plain hashlib over 1 MiB reads: what "hashlib alone" can do in Python."""
    hashers = [hashlib.new(name) for name in algorithms]
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(MIB):
            for hasher in hashers:
                hasher.update(block)
    return time.perf_counter() - started


def daemon_hash(path: Path, algorithms: tuple[str, ...]) -> float:
    started = time.perf_counter()
    hash_file(path, algorithms)
    return time.perf_counter() - started


def read_passes(root: Path, size: int) -> dict[str, float]:
    """rchar / size of ``hotfolder once`` uploading one ``size`` file, per vendor (digest set)."""
    cases = {
        "Fulcrum (sha256)": ("fulcrum", "rec-1001", "passes.bin"),
        "Visibuild (md5)": ("visibuild", "proj-1", "passes.pdf"),
    }
    passes: dict[str, float] = {}
    with SandboxProcess(root / "sim", inbox=root / "seed-inbox") as sandbox:
        for index, (label, (target, folder, name)) in enumerate(cases.items()):
            site = root / f"site-{index}"
            config = write_config(site, {target: demo_target(sandbox.url, target, timeout="10m")}, settle="200ms")
            write_file(site / "inbox" / target / folder / name, size)
            daemon = DaemonProcess("once", config, site / "daemon.log", sample_interval=0.01)
            daemon.start()
            if daemon.wait(timeout=600) != 0:
                raise SystemExit(f"hotfolder once failed; see {daemon.log}")
            # rchar is sampled until the process is reaped; the final reads (the move) are tiny.
            passes[label] = daemon.rchar / size
            print(f"{label}: the daemon read {daemon.rchar / MIB:.0f} MiB for a {human_size(size)} file "
                  f"= {passes[label]:.2f} passes", flush=True)
    return passes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("512MiB"), help="file size (default 512MiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pass-size", type=parse_size, default=parse_size("256MiB"),
                        help="file size for the read-pass count (default 256MiB)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    report = Report(f"hash step throughput, {human_size(args.size)} file (page cache), best of {args.rounds}")
    with workdir("hashing", args.keep) as root:
        path = write_file(root / "file.bin", args.size)
        baseline(path, ())  # pull the file into the page cache
        md5_alone = min(baseline(path, ("md5",)) for _ in range(args.rounds))
        for algorithms in (("md5",), ("sha256",), ("md5", "sha256")):
            base_times, daemon_times = [], []
            for _ in range(args.rounds):
                base_times.append(baseline(path, algorithms))
                daemon_times.append(daemon_hash(path, algorithms))
            rate = mb_s(args.size, min(daemon_times))
            label = "+".join(algorithms)
            same = mb_s(args.size, min(base_times))
            if algorithms == ("md5",):
                ratio = rate / mb_s(args.size, md5_alone)
                alone = f"hashlib.md5 alone {mb_s(args.size, md5_alone):.0f} MB/s"
                report.add(f"hash_file({label})", f"{rate:.0f} MB/s", alone, f"{ratio:.2f}", f"≥ {TARGET_RATIO}×",
                           ratio >= TARGET_RATIO)
            else:
                report.add(f"hash_file({label})", f"{rate:.0f} MB/s", f"hashlib {label}, same loop {same:.0f} MB/s",
                           f"{rate / same:.2f}")
            print(f"{label}: daemon {rate:.0f} MB/s, hashlib {same:.0f} MB/s", flush=True)
        for label, passes in read_passes(root, args.pass_size).items():
            # 2 = one hashing pass + one upload pass; anything near 3 means the file was hashed twice.
            report.add(f"{label}: file bytes read by the daemon / file size", f"{passes:.2f}",
                       target="≈ 2 (1 hash + 1 upload)", met=passes < 2.5)
    report.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
