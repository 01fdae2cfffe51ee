"""Links to one record, combined: the jobs waiting on a record's link lock share one read-modify-write.

A record without optimistic concurrency takes one link at a time (two read-modify-writes at once
lose one item). When a scanner drops a batch into one record folder, every worker then queues on
that record's lock for a GET and a PUT each: with a remote vendor, the files reach the record one
round trip pair at a time. So a worker that wants the lock says so first; the one that holds it
links every job waiting on the same key and target in one call (``Vendor.link_many``) and leaves
each its answer; each waiting worker, when its turn comes, takes its answer, or links itself (and
whoever waits by then) if it has none. A shared call that fails is tried again for the holder's job
alone, so one item the vendor refuses cannot fail the others' files.

Nothing changes for the crash rules: each job still commits its own link result, and a link
repeated after a crash reads the record first and finds its item there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from hotfolder.errors import StepError
from hotfolder.journal import LeaseLost
from hotfolder.vendors.base import Ids, StepContext, Vendor

LinkKey = tuple[str, ...]


class LinkCombiner:
    def __init__(self, lock_for: Callable[[LinkKey], AbstractContextManager[None]],
                 confirm: Callable[[int], None] = lambda job_id: None) -> None:
        self._lock_for = lock_for
        # Across daemons sharing a journal: raises LeaseLost for a job another daemon may hold now. The
        # holder's job then is not linked; a waiting one is left out (its worker finds out on its turn).
        self._confirm = confirm
        self._guard = threading.Lock()
        self._waiting: dict[tuple[LinkKey, str], dict[int, StepContext]] = {}
        self._answers: dict[int, Ids] = {}

    def link(self, key: LinkKey, ctx: StepContext, adapter: Vendor) -> Ids:
        """Link ``ctx`` (with whoever waits on ``key`` for the same target); its ids."""
        slot = (key, adapter.target.name)
        with self._guard:
            self._waiting.setdefault(slot, {})[ctx.job_id] = ctx
        with self._lock_for(key):
            with self._guard:
                if ctx.job_id in self._answers:
                    return self._answers.pop(ctx.job_id)
                waiting = self._waiting.pop(slot, {})
            waiting.pop(ctx.job_id, None)
            self._confirm(ctx.job_id)
            batch = [ctx, *(other for other in waiting.values() if self._held(other.job_id))]
            try:
                answers = adapter.link_many(batch)
            except StepError:
                if len(batch) == 1:
                    raise
                # The vendor may have refused one item for all: this job tries alone now, and the
                # others, left without an answer, each on its own turn.
                return adapter.link_many([ctx])[0]
            with self._guard:
                for other, ids in zip(batch[1:], answers[1:], strict=True):
                    self._answers[other.job_id] = ids
            return answers[0]

    def _held(self, job_id: int) -> bool:
        try:
            self._confirm(job_id)
        except LeaseLost:
            return False
        return True
