"""hotfolder.alerts.rules: when a pause, a wait or a digest is worth a message (pure: the clock is given)."""

from __future__ import annotations

from hotfolder.alerts.rules import (
    DIGEST_GATHER,
    PAUSE_GRACE,
    AlertRules,
    PausedNotice,
    RecoveredNotice,
    WaitingNotice,
    digest_due,
)


def always(path: str) -> bool:
    return True


def test_a_pause_renewed_past_alert_after_is_told_once_and_its_recovery_too() -> None:
    rules = AlertRules(alert_after=60)
    for now in range(0, 100, 5):  # a 429 every 5 s, each pausing for 5 s
        rules.target_paused("fulcrum", 5, "HTTP 429", now)
        notices = rules.due(now, always)
        assert notices == ([PausedNotice("fulcrum", 0, "HTTP 429")] if now == 60 else [])
    rules.target_answered("fulcrum")
    assert rules.due(101, always) == [RecoveredNotice("fulcrum", 0)]
    assert rules.due(102, always) == []


def test_a_short_pause_says_nothing_not_even_when_it_ends() -> None:
    rules = AlertRules(alert_after=60)
    rules.target_paused("fulcrum", 5, "HTTP 429", 0)
    assert rules.due(30, always) == []
    rules.target_answered("fulcrum")
    assert rules.due(100, always) == []


def test_a_pause_that_lapses_without_an_answer_ends_without_a_word() -> None:
    rules = AlertRules(alert_after=600)
    rules.target_paused("fulcrum", 5, "HTTP 429", 0)
    assert rules.due(5 + PAUSE_GRACE + 1, always) == []
    assert rules.paused_targets() == []
    rules.target_paused("fulcrum", 5, "HTTP 429", 1000)  # a new pause is timed from its own start
    assert rules.due(1000 + 599, always) == []


def test_a_long_pause_of_its_own_is_told() -> None:
    rules = AlertRules(alert_after=60)
    rules.target_paused("espocrm", 300, "vendor down", 0)  # one pause longer than alert_after
    assert rules.due(61, always) == [PausedNotice("espocrm", 0, "vendor down")]


def test_files_waiting_past_alert_after_are_told_together_once() -> None:
    rules = AlertRules(alert_after=60)
    rules.file_waiting("/in/a.pdf", "a writer holds it open", 0)
    rules.file_waiting("/in/b.pdf", "PDF has no %%EOF", 10)
    rules.file_waiting("/in/gone.pdf", "PDF has no %%EOF", 10)
    rules.file_waiting("/in/ready.pdf", "PDF has no %%EOF", 10)
    rules.file_settled("/in/ready.pdf")
    assert rules.due(59, always) == []
    (notice,) = rules.due(70, lambda path: path != "/in/gone.pdf")
    assert isinstance(notice, WaitingNotice)
    assert [(f.path, f.since) for f in notice.files] == [("/in/a.pdf", 0), ("/in/b.pdf", 10)]
    assert rules.due(200, always) == []


def test_the_digest_waits_for_its_fellows_then_for_the_interval() -> None:
    interval = 900
    assert not digest_due(100, None, None, interval)
    assert not digest_due(100 + DIGEST_GATHER - 1, 100, None, interval)  # the first failure gathers others
    assert digest_due(100 + DIGEST_GATHER, 100, None, interval)
    assert not digest_due(1000, 990, 500, interval)  # one digest per interval
    assert digest_due(1400, 990, 500, interval)
    assert digest_due(2, 0, None, 1)  # an interval shorter than the gathering time caps it
