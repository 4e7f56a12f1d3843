"""A worker process for the leadership tests: ``python -m tests.integration.leader_proc``.

Its app has one workflow, ``cron_tick``, and one schedule, ``every-second`` (``* * * * * */1``),
and runs a worker with a short leader lease (``--lease-ttl``) until SIGTERM/SIGINT; logs go to
stderr at INFO. Its instance id comes from PYPGFLOW_INSTANCE_ID, as in production.

Like ``worker_proc``, it kills itself when its parent goes away, and after ``--max-lifetime``
seconds in any case, so a test run never leaks processes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pypgflow import StepContext, Workflow
from pypgflow.app import App
from tests.integration.helpers import spawn_test_process

tick = Workflow("cron_tick")


@tick.step
def note(input: Any, ctx: StepContext) -> dict[str, Any]:
    return {"instance": ctx.instance_id, "pid": os.getpid()}


class LeaderProcess:
    """This module as a child process (the test's handle on it), its stderr in a file."""

    def __init__(
        self,
        url: str,
        instance_id: str,
        directory: Path,
        lease_ttl: float,
        max_lifetime: float = 80.0,
        stale_after: float = 30.0,
    ) -> None:
        self.instance_id = instance_id
        self.stderr_path = directory / f"leader-{instance_id}.stderr"
        self.args = [
            sys.executable, "-m", "tests.integration.leader_proc", "--url", url,
            "--lease-ttl", str(lease_ttl), "--max-lifetime", str(max_lifetime),
            "--parent-pid", str(os.getpid()), "--stale-after", str(stale_after),
        ]  # fmt: skip
        self.process = spawn_test_process(self.args, instance_id, self.stderr_path)

    def __repr__(self) -> str:
        return f"LeaderProcess({self.instance_id!r}, pid={self.process.pid})"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL if still running, and reap: always safe to call."""
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


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
        print(f"leader_proc: {reason}; killing myself", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leader_proc")
    parser.add_argument("--url", required=True)
    parser.add_argument("--lease-ttl", type=float, default=1.5)
    parser.add_argument("--max-lifetime", type=float, default=60.0)
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--stale-after", type=float, default=30.0)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s pid=%(process)d %(name)s %(levelname)s %(message)s",
    )
    threading.Thread(
        target=_watchdog, args=(args.parent_pid, args.max_lifetime), daemon=True
    ).start()
    app = App(args.url, workflows=[tick])
    app.schedule("every-second", "* * * * * */1", tick)
    try:
        app.run_worker(
            {"default": 4},
            poll_interval=0.2,
            shutdown_timeout=5.0,
            heartbeat_interval=0.5,
            lease_ttl=args.lease_ttl,
            stale_after=args.stale_after,
        )
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
