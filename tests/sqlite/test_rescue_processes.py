"""Rescue on SQLite: several worker processes on one file; one is killed with SIGKILL in the middle
of a long step, another rescues the step and finishes the run within the stale threshold. Every
process started is killed at the end (the ``processes`` fixture); the test is bounded in time."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.engines.sqlite import SqliteEngine
from pypgflow.status import StepStatus
from tests.sqlite import flows
from tests.sqlite.conftest import Processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

STALE = 2.0
BEAT = 0.5
FAST = ("--stale-after", str(STALE), "--heartbeat-interval", str(BEAT), "--poll-interval", "0.5")


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_a_step_of_a_killed_worker_is_rescued_by_another_process(
    db_path: str, tmp_path: Path, processes: Processes
) -> None:
    log = str(tmp_path / "executions.log")
    app = App(engine=SqliteEngine(db_path), workflows=flows.ALL)
    try:
        doomed = processes.worker(db_path, *FAST)  # instance w0
        wait_for(lambda: len(app.instances()) == 1, 30, "w0 to register")
        run = app.start(flows.slow, {"log": log, "seconds": 60, "slow_on": "w0"})
        wait_for(lambda: flows.read_log(log), 15, "the step to begin on w0")
        processes.worker(db_path, *FAST)  # w1
        processes.worker(db_path, *FAST)  # w2
        wait_for(lambda: len(app.instances()) == 3, 30, "w1 and w2 to register")

        killed_at = time.monotonic()
        doomed.kill()
        doomed.wait(10)
        rescuer = run.result(timeout=STALE + BEAT + 8)
        elapsed = time.monotonic() - killed_at
        assert rescuer in ("w1", "w2")
        assert STALE - BEAT - 0.2 < elapsed < STALE + BEAT + 3.0, elapsed

        (step,) = app.get_run(run.id).steps
        assert (step.status, step.attempts, step.instance_id) == (
            StepStatus.COMPLETED,
            2,
            rescuer,
        )
        (lost,) = step.errors  # rescued once, though two instances were looking
        assert (lost.type, lost.attempt, lost.instance_id) == ("WorkerLost", 1, "w0")
        assert "rescued by 'w" in lost.message
        executions = collections.Counter(e["instance"] for e in flows.read_log(log))
        assert executions == {"w0": 1, rescuer: 1}
        statuses = {i.instance_id: i.status for i in app.instances(stale_after=STALE)}
        assert statuses == {"w0": "offline", "w1": "online", "w2": "online"}
        assert processes.stop_all()[1:] == [0, 0], processes.stderr()
    finally:
        app.close()
