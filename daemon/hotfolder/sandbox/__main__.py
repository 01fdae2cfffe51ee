"""``python -m hotfolder.sandbox --host 127.0.0.1 --port 8787 --data DIR``: run the sandbox in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from . import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hotfolder.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--data", type=Path, default=Path("sandbox-data"), help="blob directory")
    parser.add_argument("--token", action="append", help="accepted Fulcrum X-ApiToken (repeatable)")
    parser.add_argument("--presign-expires", type=int, default=900, help="URL lifetime, s")
    parser.add_argument("--strict-meta", action="store_true", help="sign x-amz-meta-filename too")
    parser.add_argument("--quiet", action="store_true", help="do not print one line per request")
    parser.add_argument(
        "--record",
        action="append",
        default=[],
        metavar="ID",
        help="create a Fulcrum record with this id at start (repeatable)",
    )
    args = parser.parse_args(argv)

    tokens = args.token or ["sandbox-token"]
    sandbox = Sandbox(
        args.data,
        args.host,
        args.port,
        fulcrum_tokens=tokens,
        presign_expires=args.presign_expires,
        strict_meta=args.strict_meta,
        echo_requests=not args.quiet,
    )
    for record_id in args.record:
        sandbox.fulcrum.add_record(record_id)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with sandbox:
        # The token is a made-up sandbox credential, printed on purpose so a person can use it.
        print(f"sandbox listening on {sandbox.url}", flush=True)
        print(f"fulcrum api: {sandbox.url}/api/v2/  token: {tokens[0]}", flush=True)
        print(f"state: {sandbox.url}/_sandbox/state   (Ctrl-C to stop)", flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
