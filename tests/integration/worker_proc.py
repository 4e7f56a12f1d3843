"""A worker process for the integration tests: ``python -m tests.integration.worker_proc``.

Builds an App with the test workflows (:mod:`tests.integration.flows`) on the database of
``--url`` (a PostgreSQL URL, or ``sqlite:///`` and the path of a file the processes share) and runs
``app.run_worker()`` until SIGTERM/SIGINT; logs go to stderr at INFO. Its instance id comes from
PYPGFLOW_INSTANCE_ID, as in production.

Two safety nets keep a test run from leaking processes even if pytest itself dies: the process
kills itself when its parent goes away, and after ``--max-lifetime`` seconds in any case.
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
from pypgflow.engines.postgres.engine import PostgresEngine
from tests.integration import flows


def _queues(specs: list[str]) -> dict[str, int]:
    queues: dict[str, int] = {}
    for spec in specs or ["default=8"]:
        name, _, slots = spec.partition("=")
        queues[name] = int(slots or 10)
    return queues


def _watchdog(parent: int, max_lifetime: float) -> None:
    deadline = time.monotonic() + max_lifetime
    while True:
        time.sleep(0.25)
        if os.getppid() != parent:
            reason = "parent process exited"
        elif time.monotonic() > deadline:
            reason = f"max lifetime of {max_lifetime:g} s exceeded"
        else:
            continue
        print(f"worker_proc: {reason}; killing myself", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker_proc")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", action="append", default=[], help="name=slots (repeatable)")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--stale-after", type=float, default=30.0)
    parser.add_argument("--max-rescues", type=int, default=3)
    parser.add_argument("--max-lifetime", type=float, default=120.0)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--deploy", help="also register flows.deploy(VERSION)")
    parser.add_argument("--answer-timeout", type=float, help="PostgreSQL's answer_timeout")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    threading.Thread(
        target=_watchdog, args=(args.parent_pid, args.max_lifetime), daemon=True
    ).start()
    extra = [flows.deploy(args.deploy)] if args.deploy else []
    engine = None
    if args.answer_timeout is not None:
        engine = PostgresEngine(args.url, answer_timeout=args.answer_timeout)
    app = App(args.url, engine=engine, workflows=[*flows.ALL, *extra])
    flows.configure(app)
    try:
        app.run_worker(
            _queues(args.queue),
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
