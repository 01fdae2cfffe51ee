"""When archiving happens: a background thread that moves old finished jobs out of the live journal now
and then, and checks the archive whole when that is due (how a move is safe: ``archive.py``)."""

from __future__ import annotations

import threading
import time

import structlog

from hotfolder.journal.backend import JournalBackend

log = structlog.get_logger("hotfolder.archive")

FIRST_PASS_AFTER = 60.0  # seconds after start: a large inbox at start is journaled first
PASS_EVERY = 6 * 3600.0


class ArchiveThread:
    """Runs a pass a minute after start and every six hours after; each pass first checks the archive
    whole when that is due (after a pass that did not end, or weekly), so a restart never waits for it."""

    def __init__(self, journal: JournalBackend, older_than: float, *, first_pass_after: float = FIRST_PASS_AFTER,
                 every: float = PASS_EVERY) -> None:
        self._journal = journal
        self._older_than = older_than
        self._first_pass_after = first_pass_after
        self._every = every
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archiver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Returns once the thread is out of the journal: between two batches of a pass at most."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        if self._stopping.wait(self._first_pass_after):
            return
        while True:
            self.run_pass()
            if self._stopping.wait(self._every):
                return

    def run_pass(self) -> int:
        """One pass; how many jobs moved. Failures are logged and left for the next pass: nothing is
        lost by waiting, the jobs just stay in the live journal meanwhile."""
        try:
            if self._journal.archive_check_due:
                damaged = self._journal.check_archive()
                if damaged is not None:
                    problem, moved_to = damaged
                    log.error("journal archive damaged; moved aside and a fresh one started: files finished "
                              "before now can no longer be recognised as twins", problem=problem,
                              moved_to=str(moved_to))
            started = time.monotonic()
            moved = self._journal.archive_finished(self._older_than, keep_going=lambda: not self._stopping.is_set())
        except Exception:  # sqlite3.Error, OSError (a full disk): the next pass tries again
            log.exception("archiving finished jobs failed; trying again at the next pass")
            return 0
        if moved:
            log.info("finished jobs archived", jobs=moved, older_than_days=round(self._older_than / 86400, 2),
                     took=round(time.monotonic() - started, 2))
        return moved
