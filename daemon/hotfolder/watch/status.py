"""The files not ready yet, written down for ``hotfolder status``.

The daemon and the command are separate processes, and these files are not jobs yet (the journal
holds jobs), so the settle thread writes the tracker's list of waiting files to a small JSON file
beside the journal whenever it changes, replacing it atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from hotfolder.watch.tracker import Waiting

log = structlog.get_logger("hotfolder.watcher")


def write_waiting(status_file: Path, waiting: Sequence[Waiting], *, clock_now: float) -> None:
    """Replace ``status_file`` with ``waiting`` (their tracker times turned into wall-clock times)."""
    wall_offset = time.time() - clock_now
    entries = [{"file": w.path, "reason": w.reason, "since": w.since + wall_offset} for w in waiting]
    temp = status_file.with_name(status_file.name + ".tmp")
    try:
        temp.write_text(json.dumps({"pid": os.getpid(), "written": time.time(), "waiting": entries}))
        os.replace(temp, status_file)
    except OSError as exc:
        log.warning("cannot write the list of files not ready", file=str(status_file), error=str(exc))
        with contextlib.suppress(OSError):
            temp.unlink()
