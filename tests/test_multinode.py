"""The multi-node kill campaign, short: three daemons on one inbox and one PostgreSQL journal, kill -9,
SIGSTOP past the lease, a PostgreSQL restart and a terminated connection; nothing lost or sent twice.
The long one is ``bench/multinode_campaign.py``; the machinery and what is checked: tests/multinode.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotfolder.journal.postgres import PostgresJournal
from hotfolder.sandbox import Sandbox
from tests.harness import (
    ROOT,
    TOKEN,
    _seed_fulcrum_records,
    env_for_daemon,
    kill9,
    simulated_site,
    wait_for,
    write_config,
)
from tests.multinode import PASSWORD_VARIABLE, MultiNodeCampaign, MultiNodeResult
from tests.postgres import PASSWORD, PostgresServer


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


def test_two_nodes_share_the_work_and_status_shows_each_with_its_heartbeat(
        tmp_path: Path, postgres: PostgresServer) -> None:
    """Two `hotfolder run` on one inbox: every file attached once, both nodes worked; `hotfolder status`
    lists the nodes (running, then silent once killed, stopped after SIGTERM) and never the password."""
    url = postgres.url(postgres.create_database(), password=False).replace("@", f":${{{PASSWORD_VARIABLE}}}@", 1)
    env = {**env_for_daemon(), PASSWORD_VARIABLE: PASSWORD}
    with simulated_site(tmp_path, _seed_fulcrum_records, fulcrum_tokens=(TOKEN,)) as site:
        configs = {}
        for name in ("scan-1", "scan-2"):
            root = site.root / name
            root.mkdir()
            written = write_config(root, site.sandbox.url, journal=url, workers=2,
                                   node={"name": name, "lease": "3s", "state": str(site.root / "state")},
                                   **{folder: str(getattr(site, folder)) for folder in ("inbox", "done", "failed")})
            configs[name] = written
        started = {name: subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "-c", str(path)], env=env,
                                          cwd=ROOT, stdout=open(site.root / f"{name}.log", "ab"),  # noqa: SIM115
                                          stderr=subprocess.STDOUT) for name, path in configs.items()}
        try:
            for name in started:  # both watching before the first drop, so that both get work
                log = site.root / f"{name}.log"
                wait_for(lambda log=log: b"watching" in log.read_bytes(), timeout=60, what=f"{name} to start")
            site.sandbox.add_fault("*", r"^/api/", action="delay", delay=0.05, count=1_000_000)
            dropped = {f"scan-{n}.pdf": os.urandom(20_000) for n in range(12)}
            for name, data in dropped.items():
                site.drop("rec-1" if len(name) % 2 else "rec-2", name, data)
            wait_for(lambda: len(list(site.done.rglob("*.pdf"))) == len(dropped), timeout=60, what="every file done")
            attached = [item["name"] for record in ("rec-1", "rec-2") for item in site.attachments_on(record)]
            assert sorted(attached) == sorted(dropped)  # each once

            def status() -> str:
                result = subprocess.run([sys.executable, "-m", "hotfolder", "status", "-c", str(configs["scan-1"])],
                                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
                assert result.returncode == 0, result.stderr
                assert PASSWORD not in result.stdout + result.stderr
                return result.stdout

            text = status()
            assert "journal: postgresql://hotfolder:[redacted]@127.0.0.1" in text
            assert re.search(r"scan-1 \(.*\): running, last heartbeat .* jobs held: 0", text), text
            assert re.search(r"scan-2 \(.*\): running", text), text
            kill9(started["scan-2"])
            wait_for(lambda: re.search(r"scan-2 \(.*\): silent", status()), timeout=30, what="scan-2 silent")
            started["scan-1"].send_signal(signal.SIGTERM)
            assert started["scan-1"].wait(60) == 0
            assert re.search(r"scan-1 \(.*\): stopped", status())
            journal = PostgresJournal(postgres.url(url.rsplit("/", 1)[1]), node="audit")
            try:
                holders = {node for job in journal.jobs() for node, _ in journal.holders(job.id)}
            finally:
                journal.close()
            assert holders == {"scan-1", "scan-2"}  # both worked
            for name in started:
                assert PASSWORD not in (site.root / f"{name}.log").read_text()
        finally:
            for process in started.values():
                if process.poll() is None:
                    kill9(process)


def test_while_postgresql_is_down_nothing_leaves_the_inbox_and_the_node_says_why(
        tmp_path: Path, postgres: PostgresServer) -> None:
    """A node at work; PostgreSQL stops for longer than a lease. Meanwhile no file reaches done/ and the log
    says why the node waits; once it is back, every file is done and attached once."""
    url = postgres.url(postgres.create_database())
    with simulated_site(tmp_path, _seed_fulcrum_records, fulcrum_tokens=(TOKEN,)) as site:
        config = write_config(site.root, site.sandbox.url, journal=url, workers=2,
                              node={"name": "scan-1", "lease": "3s", "state": str(site.root / "state")})
        log = site.root / "scan-1.log"
        node = subprocess.Popen([sys.executable, "-m", "hotfolder", "run", "-c", str(config)], env=env_for_daemon(),
                                cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        try:
            wait_for(lambda: b"watching" in log.read_bytes(), timeout=60, what="the node to start")
            site.sandbox.add_fault("*", r"^/(api|s3)/", action="delay", delay=0.1, count=1_000_000)
            dropped = {f"outage-{n}.pdf": os.urandom(10_000) for n in range(10)}
            for name, data in dropped.items():
                site.drop("rec-1", name, data)
            wait_for(lambda: list(site.done.rglob("*.pdf")), timeout=60, what="the first file done")
            postgres.stop()
            try:
                wait_for(lambda: b"journal database unavailable" in log.read_bytes(), timeout=30,
                         what="the node to say why it waits")
                before = sorted(site.done.rglob("*.pdf"))
                time.sleep(4.5)  # longer than the lease
                assert sorted(site.done.rglob("*.pdf")) == before  # nothing left the inbox meanwhile
                assert len(before) < len(dropped)
            finally:
                postgres.start()
            wait_for(lambda: len(list(site.done.rglob("*.pdf"))) == len(dropped), timeout=60, what="every file")
            attached = sorted(item["name"] for item in site.attachments_on("rec-1"))
            assert attached == sorted(dropped)
            assert b"journal database answers again" in log.read_bytes()
        finally:
            kill9(node)
