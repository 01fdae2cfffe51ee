"""The readiness gate: a settled file is handed over only when the tests of :mod:`hotfolder.readiness`
say it is finished; until then it waits, and the gate remembers why and since when.

Owned by the watcher's settle thread (no lock). Waiting is not a failure: a file held open by a
writer waits however long it stays open; a file of a checked format whose end is still missing
waits up to ``incomplete_timeout`` and is then refused with the reason, for the runner to move to
``failed/``. Each file's wait is logged once per reason, not once per look, and the files waiting
are written to a small JSON file that ``hotfolder status`` reads (the daemon and the command are
separate processes; the journal holds jobs, and these are not jobs yet).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from hotfolder.readiness import WRITER_OPEN, LeaseUnsupported, check_complete, has_writer, lease_support

log = structlog.get_logger("hotfolder.watcher")

_LEASE_ADVICE = (
    "files are handed over when quiet for watch.settle and their end looks complete; to have writers "
    "detected, run the daemon as the files' owner or give it CAP_LEASE (AmbientCapabilities=CAP_LEASE in "
    "the unit), or lengthen watch.settle"
)


@dataclass(frozen=True)
class Wait:
    """Not ready: look again later."""

    reason: str


@dataclass(frozen=True)
class Refuse:
    """Incomplete for longer than allowed: send to ``failed/`` with the reason."""

    reason: str


@dataclass
class _Waiting:
    reason: str
    since_clock: float  # when this file first waited (the incomplete timeout counts from here)
    since_wall: float
    incomplete_since: float | None  # clock time the tail test first failed, or None


class ReadinessGate:
    def __init__(
        self,
        *,
        check_writers: bool = True,
        check_complete: bool = True,
        incomplete_timeout: float = 600.0,
        status_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check_writers = check_writers
        self._check_complete = check_complete
        self._incomplete_timeout = incomplete_timeout
        self._status_file = status_file
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._changed = status_file is not None  # write once at start: an old file may be stale
        self.writer_check_off: str | None = None

    def start(self, inbox: Path, mode: str) -> None:
        """Decide, once, whether the writer test can be made here, and say so if not."""
        if not self._check_writers:
            self.writer_check_off = "turned off (watch.check_writers: false)"
        elif mode == "polling":
            self.writer_check_off = (
                "the inbox is polled (a network mount): writers on other machines hold no descriptor here"
            )
        else:
            self.writer_check_off = lease_support(inbox)
        if self.writer_check_off is not None:
            log.warning("cannot tell whether a writer still has a file open", inbox=str(inbox),
                        why=self.writer_check_off, fallback=_LEASE_ADVICE)

    def examine(self, path: str, size: int) -> Wait | Refuse | None:
        """None if ``path`` is ready now; else why it must wait, or be refused."""
        now = self._clock()
        try:
            verdict = self._verdict(path, size, now)
        except FileNotFoundError:
            verdict = Wait("gone")  # the watcher's next lstat drops it
        except OSError:
            # Unreadable (permissions, I/O): the hash step's own open says why, and fails the file.
            verdict = None
        if verdict is None and self._waiting.pop(path, None) is not None:
            self._changed = True
            log.info("file ready after waiting", file=path)
        return verdict

    def forget(self, path: str) -> None:
        if self._waiting.pop(path, None) is not None:
            self._changed = True

    def waiting_count(self) -> int:
        return len(self._waiting)

    def flush(self) -> None:
        """Write the list of waiting files for ``hotfolder status`` if it changed (atomic replace)."""
        if not self._changed or self._status_file is None:
            return
        self._changed = False
        entries = [
            {"file": path, "reason": w.reason, "since": w.since_wall}
            for path, w in sorted(self._waiting.items())
        ]
        temp = self._status_file.with_name(self._status_file.name + ".tmp")
        try:
            temp.write_text(json.dumps({"pid": os.getpid(), "written": time.time(), "waiting": entries}))
            os.replace(temp, self._status_file)
        except OSError as exc:
            log.warning("cannot write the list of files not ready", file=str(self._status_file), error=str(exc))
            with contextlib.suppress(OSError):
                temp.unlink()

    # --- the tests ---

    def _verdict(self, path: str, size: int, now: float) -> Wait | Refuse | None:
        if self.writer_check_off is None and self._writer_has(path):
            self._note(path, WRITER_OPEN, now, incomplete=False)
            return Wait(WRITER_OPEN)
        if self._check_complete:
            incomplete = check_complete(Path(path), size)
            if incomplete is not None:
                waiting = self._note(path, incomplete.reason, now, incomplete=True)
                assert waiting.incomplete_since is not None
                if now - waiting.incomplete_since >= self._incomplete_timeout:
                    self.forget(path)
                    return Refuse(f"{incomplete.reason} (still incomplete after "
                                  f"{self._incomplete_timeout:g}s, watch.incomplete_timeout)")
                return Wait(incomplete.reason)
        return None

    def _writer_has(self, path: str) -> bool:
        try:
            return has_writer(Path(path))
        except LeaseUnsupported as why:
            # A file another user owns, without CAP_LEASE: the test is off from now on, said once.
            self.writer_check_off = str(why)
            log.warning("cannot tell whether a writer still has a file open", file=path, why=str(why),
                        fallback=_LEASE_ADVICE)
            return False

    def _note(self, path: str, reason: str, now: float, *, incomplete: bool) -> _Waiting:
        waiting = self._waiting.get(path)
        if waiting is None:
            waiting = _Waiting(reason, now, time.time(), None)
            self._waiting[path] = waiting
            self._changed = True
            log.info("file not ready yet", file=path, reason=reason)
        elif waiting.reason != reason:
            waiting.reason = reason
            self._changed = True
            log.info("file not ready yet", file=path, reason=reason)
        if incomplete and waiting.incomplete_since is None:
            waiting.incomplete_since = now
        elif not incomplete:
            waiting.incomplete_since = None  # a writer is at work: the timeout starts when it stops
        return waiting
