"""The multi-node kill campaign, short: three daemons on one inbox and one PostgreSQL journal, kill -9,
SIGSTOP past the lease, a PostgreSQL restart and a terminated connection; nothing lost or sent twice.
The long one is ``bench/multinode_campaign.py``; the machinery and what is checked: tests/multinode.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotfolder.sandbox import Sandbox
from tests.multinode import MultiNodeCampaign, MultiNodeResult
from tests.postgres import PostgresServer


def _campaign(tmp_path: Path, postgres: PostgresServer, **options: object) -> MultiNodeResult:
    with Sandbox(tmp_path / "simulator") as sandbox:
        campaign = MultiNodeCampaign(tmp_path / "site", sandbox, postgres=postgres, **options)  # type: ignore[arg-type]
        campaign.prepare()
        result = campaign.run_nodes()
    print(result.details())  # shown by pytest -s, and on failure
    return result


@pytest.mark.timeout(180)
def test_three_nodes_killed_frozen_and_cut_off_lose_nothing_and_send_nothing_twice(
        tmp_path: Path, postgres: PostgresServer) -> None:
    result = _campaign(tmp_path, postgres, files=45, kills=12, seed=3, min_wait=0.2, max_wait=1.0,
                       stop_rate=0.2, kill_rate=0.5)
    assert result.clean, result.details()
    assert result.postgres_restarts == 1 and result.terminated_connections >= 1, result.details()
    assert result.kills >= 3 and result.stops >= 1, result.details()
    assert result.leases_lost >= 1, result.details()  # a node woke up past its lease and was fenced
    assert result.nodes_that_worked == 3 and result.blows_with_work >= 3, result.details()
    # Takeovers happened: some jobs were held by more than one node over their life.
    assert sum(count for holders, count in result.jobs_by_holders.items() if holders >= 2) > 0, result.details()
