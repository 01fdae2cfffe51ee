"""Peak memory of ``hotfolder once`` uploading one file to the EspoCRM simulator, by size and mode.

    .venv/bin/python -m bench.espocrm_memory [MiB ...]

For each size, a fresh site and simulator; the file goes inline (one base64 JSON body) and then
chunked (4 MiB chunks). The peak RSS is that of the hotfolder process alone (``wait4``), so the
simulator's own memory is not counted. Flat memory means the peak does not grow with the size.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

from hotfolder.sandbox import Sandbox
from tests.harness import Site, hotfolder, write_config
from tests.test_espocrm import peak_rss_until_exit

MIB = 1024 * 1024


def _write(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            digest.update(block)
            handle.write(block)
            left -= len(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def measure(size: int, chunked: bool) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one ``hotfolder once`` run uploading ``size`` bytes."""
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        sandbox = Sandbox(root / "simulator").start()
        try:
            sandbox.espocrm.add_record("Document", "doc-1")
            sandbox.espocrm.max_upload_size = 4 * 1024 * MIB  # measure memory, not the 256 MB default limit
            site_root = root / "site"
            site_root.mkdir()
            target = {
                "vendor": "espocrm", "url": sandbox.url, "api_key": "sandbox-espo-key", "entity": "Document",
                "field": "file", "field_type": "file", "timeout": "60s",
                "chunk_threshold": "0" if chunked else "100GB", "chunk_size": "4MB",
            }
            config = write_config(site_root, sandbox.url, targets={"docs": target})
            site = Site(site_root, sandbox, config)
            partial = site.inbox / "docs" / "doc-1" / ".big.pdf.partial"
            expected = _write(partial, size)
            os.replace(partial, partial.with_name("big.pdf"))
            started = time.monotonic()
            process = hotfolder("once", "-c", str(config))
            peak = peak_rss_until_exit(process)
            elapsed = time.monotonic() - started
            if process.returncode != 0:
                raise SystemExit(f"hotfolder once exited {process.returncode}")
            attachment_id = sandbox.espocrm.record("Document", "doc-1")["fileId"]
            if _sha256(sandbox.espocrm.attachment_path(attachment_id)) != expected:
                raise SystemExit("the uploaded bytes differ")
            return peak / MIB, elapsed
        finally:
            sandbox.stop()


def main(argv: list[str]) -> None:
    sizes = [float(a) for a in argv] or [0.001, 100, 300]
    print("| file | mode | peak RSS | time |")
    print("|---:|---|---:|---:|")
    for mib in sizes:
        for chunked in (False, True):
            peak, elapsed = measure(max(1, int(mib * MIB)), chunked)
            mode = "chunked 4 MiB" if chunked else "inline"
            print(f"| {mib:g} MiB | {mode} | {peak:.1f} MiB | {elapsed:.1f} s |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
