"""The kill campaign, short: files over every vendor target, ``kill -9`` some tens of times, nothing lost
or sent twice. The long one is ``bench/kill_campaign.py`` (its recorded figures are in its docstring); the audit and
its reasons are in tests/campaign.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotfolder.sandbox import Sandbox
from tests.campaign import Campaign, CampaignResult


def _campaign(tmp_path: Path, *, files: int, kills: int, seed: int, max_wait: float) -> CampaignResult:
    with Sandbox(tmp_path / "simulator") as sandbox:
        campaign = Campaign(tmp_path / "site", sandbox, files=files, kills=kills, seed=seed, max_wait=max_wait)
        campaign.prepare()
        result = campaign.run()
    print(result.details())  # shown by pytest -s, and on failure
    return result


def _assert_clean(result: CampaignResult, kills: int, files: int, *, mid_work: int | None = None) -> None:
    assert result.kills == kills and result.files == files
    assert result.lost == 0, result.details()
    assert result.duplicates == 0, result.details()
    assert result.problems == [], result.details()
    assert result.done + result.failed == files and result.failed == 0
    # The campaign means something only if the kills found work under way.
    assert result.kills_mid_work >= (kills // 2 if mid_work is None else mid_work), result.details()


@pytest.mark.timeout(110)
def test_short_kill_campaign_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    result = _campaign(tmp_path, files=60, kills=30, seed=7, max_wait=1.2)
    _assert_clean(result, kills=30, files=60)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [11, 12])
def test_long_kill_campaign(tmp_path: Path, seed: int) -> None:
    result = _campaign(tmp_path, files=200, kills=120, seed=seed, max_wait=1.5)
    _assert_clean(result, kills=120, files=200)
