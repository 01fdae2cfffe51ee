"""Links to one record, combined: the jobs waiting on a record share one read-modify-write, and no
worker sits idle behind another's link.

A record without optimistic concurrency takes one link at a time (two read-modify-writes at once
lose one item). When a scanner drops a batch into one record folder, the workers holding its files
would all queue on that record for a GET and a PUT each, idle while a remote vendor answers. So the
first job to reach a record's link becomes its *server*: it links every job waiting on the same key
and target in one call (``Vendor.link_many``), round after round, until none waits. A job that
arrives while a server works is *parked*: it joins the next round and its worker goes back to the
pool for other files. Every answer, the server's own included, goes to ``deliver``, which commits
it for that job and hands the job back to the pool (the runner's side of this room).

A shared call that fails is tried again for the server's own job alone, so one item the vendor
refuses cannot fail the others' files; the others get no answer (``deliver(id, None)``) and try
again from the journal, where they still stand at ``link``.

Nothing changes for the crash rules: each job still commits its own link result, and a link
repeated after a crash reads the record first and finds its item there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from hotfolder.errors import StepError
from hotfolder.journal import LeaseLost
from hotfolder.vendors.base import Ids, StepContext, Vendor

LinkKey = tuple[str, ...]
# What a parked job gets: its ids, the vendor's refusal, LeaseLost (another daemon sharing the journal
# may hold it now: nothing more is done with it here), or None (no answer: try again).
Answer = Ids | StepError | LeaseLost | None
# deliver(job id, answer, when the job began waiting on time.monotonic())
Deliver = Callable[[int, Answer, float], None]


class LinkParked(Exception):
    """The job's link is in another round's hands (or already delivered): its worker moves on."""


class LinkCombiner:
    def __init__(self, lock_for: Callable[[LinkKey], AbstractContextManager[None]], deliver: Deliver,
                 confirm: Callable[[int], None] = lambda job_id: None) -> None:
        self._lock_for = lock_for
        self._deliver = deliver
        # Across daemons sharing a journal: raises LeaseLost for a job another daemon may hold now.
        # Asked for each job of a round once the record's lock is held; a job that is no longer ours
        # is left out of the round and delivered its LeaseLost.
        self._confirm = confirm
        self._guard = threading.Lock()
        self._waiting: dict[tuple[LinkKey, str], dict[int, tuple[StepContext, float]]] = {}
        self._served: set[tuple[LinkKey, str]] = set()  # slots with a server at work

    def link(self, key: LinkKey, ctx: StepContext, adapter: Vendor) -> None:
        """Hand ``ctx``'s link over; always raises :class:`LinkParked`. The answer reaches
        ``deliver``, from this thread (it became the record's server) or from the server's."""
        slot = (key, adapter.target.name)
        with self._guard:
            self._waiting.setdefault(slot, {})[ctx.job_id] = (ctx, time.monotonic())
            if slot in self._served:
                raise LinkParked
            self._served.add(slot)
        try:
            self._serve(slot, key, adapter)
        except BaseException:
            # A bug or an interrupt: whoever still waits tries again from the journal.
            with self._guard:
                self._served.discard(slot)
                left = self._waiting.pop(slot, {})
            for job_id, (_, since) in left.items():
                self._deliver(job_id, None, since)
            raise
        raise LinkParked

    def _serve(self, slot: tuple[LinkKey, str], key: LinkKey, adapter: Vendor) -> None:
        """Link rounds until nobody waits; the slot stays served until then (no one strands)."""
        while True:
            with self._guard:
                waiting = self._waiting.pop(slot, {})
                if not waiting:
                    self._served.discard(slot)
                    return
            try:
                with self._lock_for(key):  # other kinds of link to this record (group folders) wait too
                    self._round(waiting, adapter)
            except BaseException:
                for job_id, (_, since) in waiting.items():  # left without an answer: try again
                    self._deliver(job_id, None, since)
                raise

    def _round(self, waiting: dict[int, tuple[StepContext, float]], adapter: Vendor) -> None:
        """One read-modify-write for the jobs in ``waiting`` that are still this daemon's. Each answer
        delivered is taken out of ``waiting``: what is left there after an error got none."""
        for job_id in list(waiting):
            try:
                self._confirm(job_id)
            except LeaseLost as lost:
                self._give(waiting, job_id, lost)
        ctxs = [ctx for ctx, _ in waiting.values()]
        if not ctxs:
            return
        try:
            answers: Sequence[Answer] = adapter.link_many(ctxs)
        except StepError as error:
            # The vendor may have refused one item for all: the first tries alone now, and the
            # others go back to the journal without an answer, each to try on its own turn.
            answers = [error] if len(ctxs) == 1 else [self._alone(ctxs[0], adapter), *([None] * (len(ctxs) - 1))]
        for ctx, answer in zip(ctxs, answers, strict=True):
            self._give(waiting, ctx.job_id, answer)

    def _give(self, waiting: dict[int, tuple[StepContext, float]], job_id: int, answer: Answer) -> None:
        _, since = waiting.pop(job_id)
        self._deliver(job_id, answer, since)

    @staticmethod
    def _alone(ctx: StepContext, adapter: Vendor) -> Answer:
        try:
            return adapter.link_many([ctx])[0]
        except StepError as error:
            return error
