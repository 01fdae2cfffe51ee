"""The Prometheus metrics: counters fed by the event stream, gauges read when scraped.

Labels are bounded on purpose: a target's name (from the config), a step, an outcome, an HTTP status
code, a reason's kind. Never a file name, a record id or a vendor's words: a scrape must not grow with
the files seen, and file names are hostile input. Each daemon has a registry of its own (not the
library's global one), so two daemons in one process (the tests) do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotfolder.events import BytesSent, ConfigReloaded, Event, FileDone, FileFailed, StepEnded, VendorAnswered
from hotfolder.journal import JournalBackend
from hotfolder.live import LiveState
from hotfolder.pipeline import OutcomeKind, State
from hotfolder.watch.writers import WRITER_OPEN

# Steps range from a local hash of a small file (milliseconds) to a large upload (minutes).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Outcomes of a step that send it round again (the pipeline's retries).
_RETRIED = frozenset({OutcomeKind.TRANSIENT, OutcomeKind.EXPIRED})
UNKNOWN_TARGET = "(unknown)"


def retry_reason(kind: OutcomeKind, status: int | None) -> str:
    """A bounded label for why a step is tried again: the HTTP status, else the kind of trouble."""
    return f"http_{status}" if status else kind.value


def not_ready_reason(reason: str) -> str:
    """A bounded label for why a file is not ready: a writer holds it, or its end is missing."""
    return "writer_open" if reason == WRITER_OPEN else "incomplete"


class Metrics:
    """Subscribe it to the events; :meth:`exposition` is what ``/metrics`` serves."""

    def __init__(
        self,
        targets: Iterable[str],
        journal: JournalBackend,
        live: LiveState,
        not_ready: Callable[[], list[str]],
        version: str,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._targets = frozenset(targets)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.files = Counter("hotfolder_files", "Files that reached an outcome, by target and outcome "
                             "(done, duplicate: same bytes already on the record, failed, gone: left the inbox).",
                             ["target", "outcome"], registry=r)
        self.step_duration = Histogram("hotfolder_step_duration_seconds", "How long each step of a job took.",
                                       ["target", "step"], buckets=STEP_BUCKETS, registry=r)
        self.upload_bytes = Counter("hotfolder_upload_bytes", "File bytes handed to the vendor.", ["target"],
                                    registry=r)
        self.retries = Counter("hotfolder_retries", "Steps that failed and will be tried again, by the reason's "
                               "kind (http_<status>, transient, expired).", ["target", "step", "reason"], registry=r)
        self.responses = Counter("hotfolder_vendor_responses", "HTTP answers from each target's vendor and its "
                                 "storage, by status code.", ["target", "code"], registry=r)
        self.last_success = Gauge("hotfolder_last_success_timestamp_seconds",
                                  "When a file of the target last reached done/ (Unix time).", ["target"], registry=r)
        self.reload_ok = Gauge("hotfolder_config_last_reload_successful",
                               "1 if the configuration in use was loaded whole (at start or the last reload).",
                               registry=r)
        self.reload_ok.set(1)
        Gauge("hotfolder_build_info", "The running version (always 1).", ["version"], registry=r).labels(version).set(1)
        self._scrape = _ScrapeTime(sorted(self._targets), journal, live, not_ready, wall)
        r.register(self._scrape)
        self._duplicates: set[int] = set()  # jobs found to be twins, counted as such when they are done
        self._sent: dict[int, int] = {}  # bytes counted so far per job in a step under way

    def target(self, name: str) -> str:
        """A target as a label: a configured name, or "(unknown)" for a file refused at the door (its
        first folder, or its own name when it lies loose in the inbox, is anybody's text)."""
        return name if name in self._targets else UNKNOWN_TARGET

    def targets_changed(self, targets: Iterable[str]) -> None:
        """A reload added or removed targets: labels follow (counters of removed ones stay)."""
        self._targets = frozenset(targets)
        self._scrape.targets = sorted(self._targets)

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepEnded):
            self._step(event)
        elif isinstance(event, BytesSent):
            # Counted as they go, so a large upload shows in rate() before it ends.
            before = self._sent.get(event.job.id, 0)
            if event.sent > before:
                self.upload_bytes.labels(self.target(event.job.target)).inc(event.sent - before)
                self._sent[event.job.id] = event.sent
        elif isinstance(event, ConfigReloaded):
            self.reload_ok.set(1 if event.ok else 0)
        elif isinstance(event, VendorAnswered):
            self.responses.labels(self.target(event.target), str(event.status)).inc()
        elif isinstance(event, FileDone):
            job, target = event.job, self.target(event.job.target)
            outcome = "duplicate" if job.id in self._duplicates else "done"
            self._duplicates.discard(job.id)
            self.files.labels(target, outcome).inc()
            self.last_success.labels(target).set(job.finished_at or time.time())
        elif isinstance(event, FileFailed):  # refused files too, when they reach failed/
            self._duplicates.discard(event.job.id)
            self.files.labels(self.target(event.job.target), "failed").inc()

    def _step(self, event: StepEnded) -> None:
        job, step, target = event.job, event.step, self.target(event.job.target)
        self._sent.pop(job.id, None)
        self.step_duration.labels(target, step.value).observe(event.duration)
        kind = event.outcome.kind
        if kind is OutcomeKind.DUPLICATE:
            self._duplicates.add(job.id)
        elif kind in _RETRIED and event.decision.state not in (State.TO_FAILED, State.GONE):
            self.retries.labels(target, step.value, retry_reason(kind, event.outcome.status)).inc()
        if event.decision.state is State.GONE:
            self.files.labels(target, "gone").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTime(Collector):
    """The gauges that are a look at the present, computed when Prometheus asks."""

    def __init__(self, targets: list[str], journal: JournalBackend, live: LiveState,
                 not_ready: Callable[[], list[str]], wall: Callable[[], float]) -> None:
        self.targets = targets
        self._journal = journal
        self._live = live
        self._not_ready = not_ready
        self._wall = wall

    def describe(self) -> list[Metric]:
        return []  # described by collect(): the label values are known only then

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("hotfolder_jobs", "Jobs in the live journal by state (the steps are the queue; "
                                 "done, failed and gone are finished jobs not yet archived).", labels=["state"])
        counts: Mapping[str, int] = self._journal.counts_by_state()
        for state in State:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        now = self._wall()
        oldest = self._journal.oldest_unfinished()
        waiting = GaugeMetricFamily("hotfolder_oldest_waiting_seconds",
                                    "Age of the oldest unfinished job (0 when there is none).")
        waiting.add_metric([], max(0.0, now - oldest) if oldest is not None else 0.0)
        yield waiting
        not_ready = GaugeMetricFamily("hotfolder_not_ready_files", "Files in the inbox not ready yet, by why: "
                                      "writer_open (a writer holds it), incomplete (its end is missing).",
                                      labels=["reason"])
        reasons = [not_ready_reason(reason) for reason in self._not_ready()]
        for reason in ("writer_open", "incomplete"):
            not_ready.add_metric([reason], reasons.count(reason))
        yield not_ready
        paused = GaugeMetricFamily("hotfolder_target_paused", "1 while a target is paused (by a person, or by "
                                   "the vendor's rate limit).", labels=["target"])
        now_paused = self._live.paused()
        for target in self.targets:
            paused.add_metric([target], 1 if target in now_paused else 0)
        yield paused
