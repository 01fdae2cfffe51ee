"""What happens at the door: refused layouts go to failed/ with a reason; the same bytes twice attach once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hotfolder.journal import Journal, StepRecord
from hotfolder.pipeline import State
from tests.harness import Site, run_once_in_process, site

__all__ = ["site"]


def _sidecar(path: Path) -> dict[str, object]:
    return json.loads(path.with_name(path.name + ".error.json").read_text())


def test_a_file_without_a_record_folder_goes_to_failed_with_the_reason(site: Site) -> None:
    (site.inbox / "fulcrum").mkdir(parents=True, exist_ok=True)
    (site.inbox / "fulcrum" / "loose.pdf").write_bytes(b"no record level")
    assert run_once_in_process(site) == 1
    moved = site.failed / "fulcrum" / "loose.pdf"
    assert moved.read_bytes() == b"no record level"
    sidecar = _sidecar(moved)
    assert sidecar["step"] == "intake" and "record" in str(sidecar["reason"])


def test_an_unknown_target_and_hostile_record_ids_are_refused_not_sent(site: Site) -> None:
    drops = {
        Path("scanner-9", "rec-1", "a.pdf"): b"unknown target",
        Path("fulcrum", "rec\x01ctl", "b.pdf"): b"control character in the record id",
        Path("fulcrum", " rec-1", "c.pdf"): b"leading blank",
    }
    for relative, data in drops.items():
        (site.inbox / relative).parent.mkdir(parents=True, exist_ok=True)
        (site.inbox / relative).write_bytes(data)
    assert run_once_in_process(site) == 1
    for relative, data in drops.items():
        moved = site.failed / relative
        assert moved.read_bytes() == data
        assert _sidecar(moved)["reason"]
    assert "scanner-9" in str(_sidecar(site.failed / "scanner-9" / "rec-1" / "a.pdf")["reason"])
    assert site.sandbox.fulcrum.attachments() == []  # nothing reached the vendor


def test_a_name_that_is_not_utf8_is_refused_and_kept_byte_for_byte(site: Site) -> None:
    folder = site.inbox / "fulcrum" / "rec-1"
    folder.mkdir(parents=True, exist_ok=True)
    raw_name = b"scan-\xff\xfe.pdf"
    with open(os.path.join(os.fsencode(folder), raw_name), "wb") as handle:
        handle.write(b"latin-1 camera")
    assert run_once_in_process(site) == 1
    moved = os.path.join(os.fsencode(site.failed / "fulcrum" / "rec-1"), raw_name)
    with open(moved, "rb") as handle:
        assert handle.read() == b"latin-1 camera"
    assert os.path.exists(moved + b".error.json")


def test_the_same_bytes_twice_for_one_record_attach_once(site: Site) -> None:
    data = os.urandom(50_000)
    site.drop("rec-1", "scan.pdf", data)
    assert run_once_in_process(site) == 0
    site.drop("rec-1", "scan-again.pdf", data)  # re-saved by the scanner under another name
    assert run_once_in_process(site) == 0

    assert [item["name"] for item in site.attachments_on("rec-1")] == ["scan.pdf"]
    second = site.done / "fulcrum" / "rec-1" / "scan-again.pdf"
    assert second.read_bytes() == data
    note = json.loads(second.with_name("scan-again.pdf.duplicate.json").read_text())
    assert note["duplicate_of_file"].endswith("scan.pdf")


def test_twins_dropped_together_attach_once(site: Site) -> None:
    data = os.urandom(80_000)
    for name in ("one.jpg", "two.jpg", "three.jpg"):
        site.drop("rec-2", name, data)
    assert run_once_in_process(site) == 0
    assert len(site.attachments_on("rec-2")) == 1
    assert len(list((site.done / "fulcrum" / "rec-2").glob("*.duplicate.json"))) == 2


def test_duplicates_attach_when_configured(site: Site) -> None:
    site.config_path.write_text(site.config_path.read_text() + "duplicates: attach\n")
    data = b"same bytes, attached twice on purpose"
    site.drop("rec-1", "a.pdf", data)
    site.drop("rec-1", "b.pdf", data)
    assert run_once_in_process(site) == 0
    assert sorted(item["name"] for item in site.attachments_on("rec-1")) == ["a.pdf", "b.pdf"]


def test_the_same_bytes_for_another_record_are_not_a_duplicate(site: Site) -> None:
    data = b"one photo for two records"
    site.drop("rec-1", "p.jpg", data)
    site.drop("rec-2", "p.jpg", data)
    assert run_once_in_process(site) == 0
    assert len(site.attachments_on("rec-1")) == len(site.attachments_on("rec-2")) == 1


def test_a_planned_destination_is_dropped_when_the_file_was_taken_away(site: Site) -> None:
    """A job stopped after its link with the destination planned (committed with the link's result);
    meanwhile someone took the file out of the inbox. The job closes as done without claiming a place."""
    site.drop("rec-1", "other.pdf", b"an ordinary file beside it")
    journal = Journal(site.journal_path)
    job = journal.add_job(target="fulcrum", record="rec-1", group=None, name="gone.pdf",
                          relpath="fulcrum/rec-1/gone.pdf", size=3, mtime_ns=1)
    assert job is not None
    planned = site.done / "fulcrum" / "rec-1" / "gone.pdf"
    journal.record(job.id, StepRecord(state=State.TO_DONE, attempts=0, outcome_path=str(planned)))
    journal.close()

    assert run_once_in_process(site) == 0
    journal = Journal(site.journal_path)
    closed = journal.get(job.id)
    assert closed.state is State.DONE and closed.outcome_path is None
    assert not planned.exists()
    beside = [j.outcome_path for j in journal.jobs(states=(State.DONE,)) if j.name == "other.pdf"]
    assert beside == [str(site.done / "fulcrum" / "rec-1" / "other.pdf")]  # planned with its link, then moved
