"""Is anybody still writing a file? A read lease says, on this machine.

Linux answers "does any process hold this file open for writing?" with a read lease:
``fcntl(F_SETLEASE, F_RDLCK)`` on an ``O_RDONLY`` descriptor fails with ``EAGAIN`` while any
descriptor on the file is open for writing, in any process (smbd and vsftpd write the inbox from
their own processes: the common deployment). Taking the lease needs the file's owner as our fsuid,
or ``CAP_LEASE``; without either it fails with ``EACCES``. inotify's ``IN_CLOSE_WRITE`` only says
*a* writer closed, not that the last one did, and ``/proc/*/fdinfo`` needs ``CAP_SYS_PTRACE`` over
every other process, so the lease is the mechanism.

We hold the lease for microseconds (take, release, close). Should a writer open the file in that
window, the kernel signals a lease break to the holder: ``SIGIO`` by default, whose default action
terminates the process. ``F_SETSIG`` first points the notification at ``SIGURG``, whose default
action is to ignore it, so a break can never kill the daemon (no handler is needed, so this works
from any thread); the writer's ``open`` waits until we release, which we do at once.

The answer only covers openers on this kernel: on a network mount (NFS, CIFS, sshfs) writers on
other machines hold no local descriptor, so there the check is not made at all (:func:`lease_support`
says why, once, at start) and settle plus the tail test below carry the weight.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import time
from pathlib import Path

WRITER_OPEN = "open by a writer"

# Why the lease cannot be taken, by errno: these mean "this check is not possible here".
_LEASE_UNSUPPORTED: dict[int, str] = {
    errno.EACCES: "the daemon neither owns the inbox's files nor has CAP_LEASE",
    errno.EPERM: "the daemon neither owns the inbox's files nor has CAP_LEASE",
    errno.EINVAL: "the inbox's filesystem does not support file leases",
    errno.ENOLCK: "the inbox's filesystem does not support file leases",
    errno.ENOSYS: "the kernel does not support file leases",
}


class LeaseUnsupported(Exception):
    """The writer test cannot be made on this file (permission, filesystem); ``str()`` says why."""


def has_writer(path: Path) -> bool:
    """True while some process on this machine holds ``path`` open for writing.

    Raises :class:`LeaseUnsupported` when the lease cannot be taken for a reason other than a
    writer, and ``OSError`` when the file cannot be opened at all.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        # Before the lease exists: a break notification must go to a signal that is ignored.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return True
            why = _LEASE_UNSUPPORTED.get(exc.errno or 0)
            if why is None:
                raise
            raise LeaseUnsupported(why) from None
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


PROBE_PREFIX = ".hotfolder-lease-probe-"
STALE_PROBE_AGE = 60.0  # seconds: a probe lives for milliseconds; an older one was left by a killed daemon


def _remove_stale_probes(folder: Path) -> None:
    """Probe files a daemon killed between their creation and removal left behind (any daemon's, on a
    shared inbox: by age, not by pid, which only means something on the host that made it)."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(PROBE_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_PROBE_AGE:
                        os.unlink(entry.path)


def lease_support(folder: Path) -> str | None:
    """None if the writer test works for files in ``folder``; else why not, for the start-up log.

    Probed on a file of our own, which only proves the filesystem: files other users own need
    ``CAP_LEASE`` as well, and that case is reported when a file first meets it.
    """
    _remove_stale_probes(folder)
    # The host in the name too: several daemons on several servers probe one shared inbox.
    probe = folder / f"{PROBE_PREFIX}{socket.gethostname()}-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as exc:
        return f"cannot create a probe file in {folder}: {exc.strerror or exc}"
    try:
        has_writer(probe)
    except LeaseUnsupported as why:
        return str(why)
    except OSError as exc:
        return f"cannot open a probe file in {folder}: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


