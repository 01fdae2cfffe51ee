"""The cost of the readiness tests per file: the writer lease and the tail test, against a bare lstat.

    python bench/readiness_cost.py            # 2,000 PDFs of 256 KiB in a temp folder, 5 rounds

Prints the median microseconds per file of each, side by side with ``os.lstat`` (what settle
already pays per look), so the ratio says what the checks add to a file's pickup.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hotfolder.watch.formats import check_complete
from hotfolder.watch.writers import has_writer

FILES = 2000
ROUNDS = 5


def per_file(paths: list[Path], action: object) -> float:
    assert callable(action)
    started = time.perf_counter()
    for path in paths:
        action(path)
    return (time.perf_counter() - started) / len(paths) * 1e6


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hotfolder-readiness-") as folder:
        body = os.urandom(256 * 1024)
        paths = []
        for n in range(FILES):
            path = Path(folder) / f"scan-{n:04d}.pdf"
            path.write_bytes(b"%PDF-1.4\n" + body + b"\n%%EOF\n")
            paths.append(path)
        size = paths[0].stat().st_size
        figures: dict[str, list[float]] = {"lstat": [], "writer lease": [], "tail test": []}
        for _ in range(ROUNDS):
            figures["lstat"].append(per_file(paths, os.lstat))
            figures["writer lease"].append(per_file(paths, has_writer))
            figures["tail test"].append(per_file(paths, lambda p: check_complete(p, size)))
    base = statistics.median(figures["lstat"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"{name:>12}: {median:7.1f} µs per file (min {min(values):.1f}, max {max(values):.1f}), "
              f"{median / base:5.1f}x lstat")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
