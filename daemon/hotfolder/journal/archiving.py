"""Moving old finished jobs from the journal into its archive (``archive.py``), as the SQLite journal
does it: the archive opened at start when it exists, the pass that moves rows batch by batch, the
archive's whole-file check, and twin lookups that reach into it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hotfolder.journal import changes, queries
from hotfolder.journal.archive import Archive, archive_path
from hotfolder.journal.commit import GroupCommit
from hotfolder.journal.model import Job
from hotfolder.journal.opening import FULL_CHECK_EVERY, move_aside, open_or_move_aside
from hotfolder.journal.queries import Reader


class Archiving:
    """Thread-safe. Shares the journal's group commit and read connection; one pass or check at a time."""

    def __init__(self, journal: Path, *, clock: Callable[[], float], commits: GroupCommit, reader: Reader) -> None:
        """Opens the archive if the file exists (an unreadable one is moved aside, see
        ``recovered_from``); otherwise the first pass that has something to move creates it."""
        self._path = archive_path(journal)
        self._clock = clock
        self._commits = commits
        self._reader = reader
        self._lock = threading.Lock()  # one pass or check at a time; held while _archive changes
        self._archive: Archive | None = None
        self.recovered_from: Path | None = None
        if self._path.exists():
            self._archive, self.recovered_from = open_or_move_aside(self._path, self._open)
            highest = self._archive.highest_id()
            if highest:
                commits.write(changes.ids_after(highest))

    def _open(self, path: Path) -> Archive:
        return Archive(path, clock=self._clock, check_every=FULL_CHECK_EVERY)

    def close(self) -> None:
        with self._lock:
            if self._archive is not None:
                self._archive.close()

    def add_twins(
        self, found: list[Job], target: str, record: str | None, exclude: int, size: int, digests: Mapping[str, Any]
    ) -> list[Job]:
        """``found`` (the journal's possible twins) with the archive's added, by id. Ask the journal
        first and the archive after, never the other way: a row being archived reaches the archive
        before it leaves the journal, so in this order it is seen at least once (``archive.py``)."""
        archive = self._archive
        if archive is None:
            return found
        known = {job.id for job in found}
        found.extend(job for job in archive.possible_twins(target, record, exclude, size, digests)
                     if job.id not in known)
        found.sort(key=lambda job: job.id)
        return found

    def move_finished(self, older_than: float, *, batch: int, keep_going: Callable[[], bool]) -> int:
        """Move the jobs finished more than ``older_than`` seconds ago into the archive; returns how many.

        Batch by batch, each committed in the archive before it is deleted here (the crash rules are in
        ``archive.py``). The deletes go through the group commit like any step, so workers keep going
        meanwhile; ``keep_going`` is asked between batches so that a stopping daemon need not wait for a
        long first pass (the rest moves at the next one)."""
        cutoff = self._clock() - older_than
        moved = 0
        with self._lock:
            while keep_going():
                rows = self._reader.run(queries.finished_before, cutoff, batch)
                if not rows:
                    break
                if self._archive is None:
                    self._archive = self._open(self._path)
                if not moved:
                    self._archive.begin_pass()
                self._archive.store(rows)
                self._commits.write(changes.delete_jobs([row[0] for row in rows]))
                moved += len(rows)
            if moved and self._archive is not None:
                self._archive.end_pass()
                self._give_back_free_pages()
        return moved

    def _give_back_free_pages(self) -> None:
        """Truncate the pages the pass freed off the file (auto_vacuum=INCREMENTAL; a no-op on a journal
        made before that was set). With no group commit under way, so no transaction is open:
        ``executescript`` is needed because ``execute`` steps this pragma once, freeing one page."""
        with self._commits.exclusive() as conn:
            conn.executescript("PRAGMA incremental_vacuum")

    def count(self) -> int:
        archive = self._archive
        return archive.count() if archive is not None else 0

    @property
    def check_due(self) -> bool:
        archive = self._archive
        return archive is not None and archive.check_due

    def check(self) -> tuple[str, Path] | None:
        """Check the archive whole (seconds at a million rows from a cold disk: call it from a background
        thread). None if it passed or was not due; if damaged, it is moved aside and the next pass starts
        a fresh one: returns SQLite's complaint and where the damaged file went. A twin lookup that
        meets the closed archive meanwhile raises, and its step is retried."""
        with self._lock:
            archive = self._archive
            if archive is None or not archive.check_due:
                return None
            result = archive.check()
            if result == "ok":
                return None
            self._archive = None
            archive.close()
            return result, move_aside(archive.path)
