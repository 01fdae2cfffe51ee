"""Twins at the door, decided without a journal: which job goes on, which waits, which is a duplicate."""

from __future__ import annotations

from dataclasses import replace

from hotfolder.journal import Job
from hotfolder.pipeline import State
from hotfolder.twins import Duplicate, WaitForTwin, find_twin, same_content

DIGESTS = {"size": 5, "sha256": "a" * 64, "md5": "b" * 32}
OTHER = {"size": 5, "sha256": "c" * 64, "md5": "d" * 32}


def job(job_id: int, digests: dict | None = DIGESTS, state: State = State.PRESIGN, name: str = "scan.pdf") -> Job:
    return Job(id=job_id, target="fulcrum", record="rec-1", group=None, name=name, relpath=f"fulcrum/rec-1/{name}",
               size=5, mtime_ns=1, digests=digests, state=state, attempts=0, next_attempt_at=0.0, vendor={},
               last_error=None, outcome_path=None, created_at=0.0, updated_at=0.0, finished_at=None)


def test_no_candidates_nothing_stands_in_the_way() -> None:
    assert find_twin(job(2), []) is None


def test_a_twin_done_or_on_its_way_to_done_makes_this_a_duplicate() -> None:
    for state in (State.DONE, State.TO_DONE):
        twin = replace(job(1, state=state, name="copy.pdf"), outcome_path="/done/fulcrum/rec-1/copy.pdf")
        assert find_twin(job(2), [twin]) == Duplicate(1, "/done/fulcrum/rec-1/copy.pdf")


def test_an_older_twin_still_under_way_goes_first() -> None:
    verdict = find_twin(job(2), [job(1, state=State.UPLOAD, name="copy.pdf")])
    assert isinstance(verdict, WaitForTwin) and "job 1" in verdict.reason


def test_a_younger_twin_under_way_waits_for_this_one_not_the_other_way() -> None:
    assert find_twin(job(1), [job(2, state=State.UPLOAD)]) is None


def test_an_older_file_of_the_same_size_not_hashed_yet_may_be_a_twin_so_it_goes_first() -> None:
    verdict = find_twin(job(2), [job(1, digests=None)])
    assert isinstance(verdict, WaitForTwin) and "to be hashed" in verdict.reason
    assert find_twin(job(1), [job(2, digests=None)]) is None  # a younger one waits for us instead


def test_other_bytes_are_no_twin() -> None:
    assert find_twin(job(2), [job(1, digests=OTHER, state=State.DONE)]) is None


def test_same_content_compares_every_digest_both_have() -> None:
    assert same_content(DIGESTS, {"size": 5, "md5": "b" * 32})  # Visibuild hashes MD5 only
    assert not same_content(DIGESTS, {"size": 6, "md5": "b" * 32})
    assert not same_content(DIGESTS, {"size": 5})
    assert not same_content(DIGESTS, {"size": 5, "sha256": "a" * 64, "md5": "x"})
