"""The event stream: what the daemon says happened, as a subscriber sees it (the log is one of them)."""

from __future__ import annotations

from hotfolder.events import (
    Event,
    EventBus,
    FileDone,
    FileFailed,
    FileQueued,
    FileRefused,
    StepEnded,
    TargetPaused,
)
from hotfolder.pipeline import State
from hotfolder.service import Daemon
from tests import harness
from tests.harness import Site

site = harness.site  # the fixture: a simulator with records rec-1 and rec-2, and a site beside it


def test_a_subscriber_that_raises_does_not_stop_the_others() -> None:
    bus, seen = EventBus(), []

    def broken(event: Event) -> None:
        raise RuntimeError("a subscriber's bug")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    event = TargetPaused("fulcrum", 5.0, "429")
    bus.emit(event)
    assert seen == [event]


def test_a_file_travels_as_events_from_queued_to_done(site: Site) -> None:
    site.drop("rec-1", "scan.pdf", b"%PDF-1.4 events")
    daemon = Daemon(site.settings())
    seen: list[Event] = []
    daemon.events.subscribe(seen.append)
    assert daemon.run_once() == 0
    kinds = [type(event) for event in seen]
    # The workers start before the queued events go out (see FileQueued): only the end is in order.
    assert kinds.count(FileQueued) == 1 and kinds[-1] is FileDone
    steps = [event.step for event in seen if isinstance(event, StepEnded)]
    assert steps == [State.HASH, State.PRESIGN, State.UPLOAD, State.FINALIZE, State.LINK, State.TO_DONE]
    done = seen[-1]
    assert isinstance(done, FileDone) and done.job.outcome_path and done.job.vendor["attachment_id"]


def test_a_refused_file_and_a_rate_limit_are_events_too(site: Site) -> None:
    site.sandbox.add_fault("POST", r"^/api/v2/attachments$", status=429, count=1, headers={"Retry-After": "1"})
    site.drop("rec-1", "scan.pdf", b"%PDF-1.4 paced")
    (site.inbox / "fulcrum" / "loose.pdf").write_bytes(b"no record folder")
    daemon = Daemon(site.settings())
    seen: list[Event] = []
    daemon.events.subscribe(seen.append)
    assert daemon.run_once() == 1
    refused = [event for event in seen if isinstance(event, FileRefused)]
    assert [event.job.name for event in refused] == ["loose.pdf"]
    paused = [event for event in seen if isinstance(event, TargetPaused)]
    assert [(event.target, event.seconds) for event in paused] == [("fulcrum", 1.0)]
    assert [event.job.name for event in seen if isinstance(event, FileFailed)] == ["loose.pdf"]
    assert [event.job.name for event in seen if isinstance(event, FileDone)] == ["scan.pdf"]
