"""The readiness tests, run where the tracker asks for them: the I/O half of "is it finished?".

For a candidate that has been quiet long enough, :class:`Examiner` looks at the file once more
through an open where the mount answers opens afresh (NFS close-to-open, SMB), asks whether any
process still holds it open for writing (:mod:`hotfolder.watch.writers`) and whether its end looks
like the end of its format (:mod:`hotfolder.watch.formats`), and hands the answers to the tracker,
which decides. Whether the writer test can be made here is decided once at start and said once in
the log, with what the admin can do; a file that later shows it cannot (another owner, no
``CAP_LEASE``) turns it off, said once too.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from hotfolder.watch.formats import check_complete
from hotfolder.watch.tracker import Answers
from hotfolder.watch.writers import LeaseUnsupported, has_writer, lease_support

log = structlog.get_logger("hotfolder.watcher")

_LEASE_ADVICE = (
    "files are handed over when quiet for watch.settle and their end looks complete; to have writers "
    "detected, run the daemon as the files' owner or give it CAP_LEASE (AmbientCapabilities=CAP_LEASE in "
    "the unit), or lengthen watch.settle"
)


class Examiner:
    """Runs the enabled readiness tests on one file at a time; owned by the settle thread."""

    def __init__(self, *, check_writers: bool = True, check_complete: bool = True,
                 look_through_open: bool = False) -> None:
        self._check_writers = check_writers
        self._check_complete = check_complete
        self._look_through_open = look_through_open
        # Why writers cannot be detected here (said once), or None while the test is made.
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

    def answers(self, path: str, size: int) -> Answers | None:
        """What the tests find in ``path`` (``size`` bytes at its last lstat); None if it is gone.

        A file that cannot be read passes: the hash step's own open says why, and fails the file.
        """
        try:
            fresh = _figures_through_open(path) if self._look_through_open else None
            if fresh is not None and fresh[0] != size:
                return Answers(fresh=fresh)  # settle starts again; no test on figures already old
            writer_open = self.writer_check_off is None and self._writer_has(path)
            incomplete = None
            if not writer_open and self._check_complete:
                found = check_complete(Path(path), size)
                incomplete = found.reason if found is not None else None
        except FileNotFoundError:
            return None
        except OSError:
            return Answers()
        return Answers(fresh=fresh, writer_open=writer_open, incomplete=incomplete)

    def _writer_has(self, path: str) -> bool:
        try:
            return has_writer(Path(path))
        except LeaseUnsupported as why:
            # A file another user owns, without CAP_LEASE: the test is off from now on, said once.
            self.writer_check_off = str(why)
            log.warning("cannot tell whether a writer still has a file open", file=path, why=str(why),
                        fallback=_LEASE_ADVICE)
            return False


def _figures_through_open(path: str) -> tuple[int, int]:
    """(size, mtime_ns) asked through an open: NFS (close-to-open) and SMB answer an open from the
    server, not from the attribute cache that lstat used."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_size, st.st_mtime_ns
