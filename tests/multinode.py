"""The multi-node kill campaign: several ``hotfolder run`` on one inbox and one PostgreSQL journal, hit at random.

Theory of operation
-------------------
The files, the simulator and the audit are the single-node campaign's (``tests/campaign.py``): every
vendor target, Visibuild ticket folders, twins. What differs is who does the work: ``nodes`` daemons run
at once on the same inbox, each with a config of its own (its node name) naming one PostgreSQL database,
the password passed through ``${HOTFOLDER_TEST_PG_PASSWORD}``. Each round drops files, waits a random
moment and then does one of:

* ``kill -9`` of a node, restarted at once or only after a lease or two (the others take its jobs over
  when its leases end: the takeover);
* ``SIGSTOP`` of a node for longer than its lease, then ``SIGCONT`` (the fencing case: it wakes up in the
  middle of steps whose jobs other nodes hold by then; its late results must change nothing);
* nothing (the nodes compete for work).

Once during the run PostgreSQL itself is restarted, and once every connection of one node is cut with
``pg_terminate_backend``. At the end every node is running; the campaign waits until the journal holds
no unfinished job and the inbox is empty, stops the nodes (SIGTERM) and audits: lost 0, duplicates 0,
every link exactly once (``campaign.audit``); besides, each finished job's claims show which nodes held
it, and no node's log holds the database password.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hotfolder.journal import JournalBackend
from hotfolder.journal.postgres import PostgresJournal
from tests.campaign import Campaign, CampaignResult, audit
from tests.harness import ROOT, env_for_daemon
from tests.postgres import PASSWORD, PostgresServer

PASSWORD_VARIABLE = "HOTFOLDER_TEST_PG_PASSWORD"


@dataclass
class MultiNodeResult:
    campaign: CampaignResult
    nodes: int
    kills: int = 0
    stops: int = 0  # SIGSTOPs held past the lease
    postgres_restarts: int = 0
    terminated_connections: int = 0
    blows_with_work: int = 0  # kills and stops of a node that held jobs at that moment
    leases_lost: int = 0  # "job dropped: this node no longer holds it" lines: fencing at work
    jobs_by_holders: Counter[int] = field(default_factory=Counter)  # how many jobs had 1, 2, ... holders
    nodes_that_worked: int = 0
    jobs_by_state: Counter[str] = field(default_factory=Counter)  # gone: a node journaled a file another had moved
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        c = self.campaign
        return (c.lost == 0 and c.duplicates == 0 and not c.problems and not self.problems
                and c.done + c.failed == c.files and c.failed == 0)

    def details(self) -> str:
        lines = [
            f"nodes: {self.nodes}, kill -9: {self.kills}, SIGSTOP past the lease: {self.stops}, "
            f"PostgreSQL restarts: {self.postgres_restarts}, connections terminated: {self.terminated_connections}, "
            f"blows to a node holding jobs: {self.blows_with_work}",
            f"  leases lost (jobs dropped by a node that woke up or lost its database): {self.leases_lost}; "
            f"jobs by number of claims: {dict(sorted(self.jobs_by_holders.items()))}; "
            f"nodes that held jobs: {self.nodes_that_worked}; "
            f"jobs by state: {dict(sorted(self.jobs_by_state.items()))}",
            self.campaign.details(),
        ]
        lines.extend(f"  PROBLEM: {problem}" for problem in self.problems)
        return "\n".join(lines)


@dataclass
class MultiNodeCampaign(Campaign):
    postgres: PostgresServer | None = None
    database: str = ""
    nodes: int = 3
    lease: float = 3.0
    stop_rate: float = 0.25  # share of rounds that SIGSTOP a node past its lease
    kill_rate: float = 0.5  # share of rounds that kill -9 a node
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _restart_at: dict[str, float] = field(default_factory=dict)
    _watcher: Any = None  # a journal of the campaign's own, to see which node holds jobs

    # -- set-up ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.postgres is not None
        return self.postgres.url(self.database)

    def node_names(self) -> list[str]:
        return [f"node-{number + 1}" for number in range(self.nodes)]

    def node_config(self, name: str) -> Path:
        return self.root / f"{name}.yaml"

    def node_log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def prepare(self) -> None:
        super().prepare()
        assert self.postgres is not None
        self.database = self.database or self.postgres.create_database()
        base: dict[str, Any] = yaml.safe_load(self.config_path.read_text())
        written = self.postgres.url(self.database, password=False).replace(
            "@", f":${{{PASSWORD_VARIABLE}}}@", 1)
        for name in self.node_names():
            config = {**base, "journal": written,
                      "node": {"name": name, "lease": f"{self.lease:g}s", "state": str(self.root / "state")}}
            self.node_config(name).write_text(yaml.safe_dump(config, sort_keys=False))

    def open_journal(self) -> JournalBackend:
        return PostgresJournal(self.url, node="audit")

    # -- the nodes ------------------------------------------------------------------------------

    def _start(self, name: str) -> None:
        env = env_for_daemon()
        env[PASSWORD_VARIABLE] = PASSWORD
        log = open(self.node_log(name), "ab")  # noqa: SIM115 - closed by the OS when the child ends
        self._processes[name] = subprocess.Popen(
            [sys.executable, "-m", "hotfolder", "run", "-c", str(self.node_config(name))],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def _alive(self) -> list[str]:
        return [name for name, process in self._processes.items() if process.poll() is None]

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[name]
                self._start(name)

    def _sleep(self, seconds: float) -> None:
        """Sleep, restarting killed nodes when their time comes, and noticing a node that died by itself."""
        deadline = time.monotonic() + seconds
        while True:
            self._restart_due()
            for name, process in self._processes.items():
                if process.poll() is not None and name not in self._restart_at and process.returncode != -9:
                    raise AssertionError(f"{name} exited by itself ({process.returncode}); see {self.node_log(name)}")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    # -- the campaign ---------------------------------------------------------------------------

    def run_nodes(self) -> MultiNodeResult:
        assert self.postgres is not None
        started = time.monotonic()
        rng = random.Random(self.seed)
        rounds = self._plan(rng)
        result = MultiNodeResult(campaign=CampaignResult(0, 0, 0, 0, 0, 0), nodes=self.nodes)
        restart_round = rng.randrange(1, max(2, self.kills))
        terminate_round = (restart_round + max(1, self.kills // 2)) % max(1, self.kills)
        self._watcher = PostgresJournal(self.url, node="campaign")
        for name in self.node_names():
            self._start(name)
        self.sandbox.clear_faults()
        self._latency_now = rng.uniform(*self.latency) if self.latency else 0.0
        if self._latency_now:
            # Requests take a moment, so that blows land with work under way at the vendor.
            self.sandbox.add_fault("*", r"^/(api|s3|oauth)/", action="delay", delay=self._latency_now,
                                   count=1_000_000)
        for number in range(self.kills):
            for action in rounds[number]:
                action()
            self._sleep(rng.uniform(self.min_wait, self.max_wait))
            if number == restart_round:
                self.log(f"round {number + 1}: PostgreSQL restart")
                self.postgres.restart()
                result.postgres_restarts += 1
            if number == terminate_round:
                result.terminated_connections += self._terminate_one(rng, number)
            alive = self._alive()
            roll = rng.random()
            if alive and roll < self.stop_rate + self.kill_rate:
                victim, holding = self._busiest(alive, rng)
                result.blows_with_work += holding > 0
            if alive and roll < self.stop_rate:
                frozen = self.lease + rng.uniform(0.5, 1.5)
                self.log(f"round {number + 1}: SIGSTOP {victim} for {frozen:.1f}s (lease {self.lease:g}s)")
                self._processes[victim].send_signal(signal.SIGSTOP)
                self._sleep(frozen)
                self._processes[victim].send_signal(signal.SIGCONT)
                result.stops += 1
            elif alive and roll < self.stop_rate + self.kill_rate:
                self._processes[victim].send_signal(signal.SIGKILL)
                self._processes[victim].wait(10)
                later = rng.choice([0.0, 0.0, self.lease * rng.uniform(1.0, 2.0)])
                self._restart_at[victim] = time.monotonic() + later
                self.log(f"round {number + 1}: kill -9 {victim}, restarted in {later:.1f}s")
                result.kills += 1
        for action in rounds[self.kills]:
            action()
        self._restart_at = dict.fromkeys(self._restart_at, 0.0)
        self._restart_due()
        self.sandbox.clear_faults()
        self._wait_until_finished(timeout=240)
        for process in self._processes.values():
            process.send_signal(signal.SIGTERM)
        for name, process in self._processes.items():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                result.problems.append(f"{name} did not stop within 60 s of SIGTERM")
        self._watcher.close()
        result.campaign = audit(self, result.kills)
        result.campaign.seconds = time.monotonic() - started
        self._audit_nodes(result)
        return result

    def _terminate_one(self, rng: random.Random, number: int) -> int:
        """``pg_terminate_backend`` of every connection of one node (the first found with any, trying for a
        few seconds: a node just restarted may not have connected yet); how many were cut."""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            for victim in rng.sample(self.node_names(), self.nodes):
                cut = self.postgres.terminate(self.database, f"hotfolder {victim}") if self.postgres else 0
                if cut:
                    self.log(f"round {number + 1}: pg_terminate_backend of {victim}'s {cut} connection(s)")
                    return cut
            self._sleep(0.1)
        return 0

    def _busiest(self, alive: list[str], rng: random.Random) -> tuple[str, int]:
        """The live node holding the most jobs (a blow that finds work under way; waiting up to two
        seconds for some to be claimed), and how many it holds."""
        deadline = time.monotonic() + 2.0
        while True:
            held = {node.name: node.jobs_held for node in self._watcher.nodes() if node.name in alive}
            most = max(held.values(), default=0)
            if most or time.monotonic() > deadline:
                return rng.choice([name for name in alive if held.get(name, 0) == most]), most
            self._sleep(0.05)

    def _wait_until_finished(self, timeout: float) -> None:
        journal = self.open_journal()
        try:
            deadline = time.monotonic() + timeout
            quiet = 0
            while time.monotonic() < deadline and quiet < 3:
                self._sleep(0.5)
                inbox_empty = not any(p.is_file() for p in self.inbox.rglob("*"))
                quiet = quiet + 1 if inbox_empty and journal.unfinished_count() == 0 else 0
        finally:
            journal.close()

    def _audit_nodes(self, result: MultiNodeResult) -> None:
        journal = PostgresJournal(self.url, node="audit")
        try:
            held_by: set[str] = set()
            for job in journal.jobs(limit=1_000_000):
                holders = journal.holders(job.id)
                if job.state.value in ("done", "failed") and not holders:
                    result.problems.append(f"job {job.id} ({job.relpath}) finished without a holder in its history")
                result.jobs_by_holders[len(holders)] += 1
                result.jobs_by_state[job.state.value] += 1
                held_by.update(node for node, _ in holders)
            result.nodes_that_worked = len(held_by & set(self.node_names()))
        finally:
            journal.close()
        for name in self.node_names():
            text = self.node_log(name).read_bytes()
            if PASSWORD.encode() in text:
                result.problems.append(f"{name}'s log holds the database password")
            result.leases_lost += text.count(b"this node no longer holds it")
            if b"Traceback" in text and b"worker error" in text:
                result.problems.append(f"{name}'s log has a worker error (a bug): see {self.node_log(name)}")

