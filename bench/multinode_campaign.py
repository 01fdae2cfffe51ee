"""The long multi-node kill campaign: three ``hotfolder run`` on one inbox and one PostgreSQL journal.

    .venv/bin/python bench/multinode_campaign.py --files 300 --rounds 60 [--nodes 3] [--seed 1] [--lease 3]

Each round drops files and then kills a node (``kill -9``, restarted at once or after its leases ended),
freezes one past its lease (``SIGSTOP``, then ``SIGCONT``), or lets them compete; once PostgreSQL is
restarted and once one node's connections are cut (``pg_terminate_backend``). Prints the summary (lost,
duplicates, links) and which nodes held the jobs; exits 1 if anything was lost or duplicated or a problem
was found. PostgreSQL is a private cluster (``tests/postgres.py``); the site, the simulator's data and each
node's log stay under a temporary folder (printed). CI runs the short version (tests/test_multinode.py);
what is checked and why: tests/multinode.py. Recorded results: bench/RESULTS.md, "Issue 14".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from hotfolder.sandbox import Sandbox
from tests.multinode import MultiNodeCampaign
from tests.postgres import start_postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lease", type=float, default=3.0, help="seconds (node.lease)")
    parser.add_argument("--min-wait", type=float, default=0.2)
    parser.add_argument("--max-wait", type=float, default=1.5)
    parser.add_argument("--stop-rate", type=float, default=0.2, help="share of rounds with a SIGSTOP past the lease")
    parser.add_argument("--kill-rate", type=float, default=0.5, help="share of rounds with a kill -9")
    parser.add_argument("--quiet", action="store_true", help="no line per blow")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="hotfolder-multinode-"))
    print(f"site, simulator and node logs under {root}", flush=True)
    postgres = start_postgres()
    try:
        with Sandbox(root / "simulator") as sandbox:
            campaign = MultiNodeCampaign(
                root / "site", sandbox, postgres=postgres, files=args.files, kills=args.rounds, seed=args.seed,
                nodes=args.nodes, lease=args.lease, min_wait=args.min_wait, max_wait=args.max_wait,
                stop_rate=args.stop_rate, kill_rate=args.kill_rate,
                log=(lambda line: None) if args.quiet else (lambda line: print(line, flush=True)),
            )
            campaign.prepare()
            result = campaign.run_nodes()
    finally:
        postgres.remove()
    print(result.details(), flush=True)
    return 0 if result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
