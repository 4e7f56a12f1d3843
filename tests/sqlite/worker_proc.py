"""A worker process on a SQLite file: ``python -m tests.sqlite.worker_proc --db PATH``.

Runs :mod:`tests.sqlite.flows` until SIGTERM/SIGINT. It kills itself if its parent goes away,
and after ``--max-lifetime`` seconds in any case, so a dying test run leaks no process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from pypgflow.app import App
from pypgflow.engines.sqlite import SqliteEngine
from tests.sqlite import flows


def _watchdog(parent: int, max_lifetime: float) -> None:
    deadline = time.monotonic() + max_lifetime
    while True:
        time.sleep(0.25)
        if os.getppid() != parent or time.monotonic() > deadline:
            print("worker_proc: parent gone or lifetime over; killing myself", file=sys.stderr)
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker_proc")
    parser.add_argument("--db", required=True)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--max-lifetime", type=float, default=90.0)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--stale-after", type=float, default=30.0)
    parser.add_argument("--max-rescues", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    threading.Thread(target=_watchdog, args=(os.getppid(), args.max_lifetime), daemon=True).start()
    app = App(engine=SqliteEngine(args.db), workflows=flows.ALL)
    try:
        app.run_worker(
            {"default": args.slots},
            poll_interval=args.poll_interval,
            shutdown_timeout=args.shutdown_timeout,
            heartbeat_interval=args.heartbeat_interval,
            stale_after=args.stale_after,
            max_rescues=args.max_rescues,
        )
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
