"""A deploy with worker processes of two versions: a version-1 run stopped between steps (its
worker shut down) waits while only a version-2 worker runs, never failed by it, and is finished
by a version-1 worker started later; on both engines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.integration import flows
from tests.integration.flows import read_log
from tests.integration.helpers import WorkerProcess, wait_for, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def test_a_run_of_the_old_version_waits_for_a_worker_of_its_version(
    database_url: str, tmp_path: Path, log_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    gate = tmp_path / "gate"
    with App(database_url, workflows=[flows.deploy("1")], instance_id="it-test") as app:
        app.migrate()
        old = spawn_worker("it-v1", deploy="1", shutdown_timeout=0.5)
        wait_ready(app, [old])
        run = app.start("it_deploy", {"log": str(log_path), "amount": 5, "gate": str(gate)})

        def begun(step: str) -> bool:
            return (
                any(e["step"] == step for e in read_log(log_path)) if log_path.exists() else False
            )

        wait_for(lambda: begun("capture"), timeout=20, what="the v1 worker in its second step")
        assert old.stop(timeout=20) == 0  # the deploy stops it: capture is handed back

        new = spawn_worker("it-v2", deploy="2")
        wait_ready(app, [new])
        wait_for(
            lambda: app.get_run(run.id).waiting_for_version, timeout=10, what="the run waiting"
        )
        info = app.get_run(run.id)
        assert info.status is RunStatus.RUNNING
        assert {s.name: s.status for s in info.steps} == {
            "reserve": StepStatus.COMPLETED,
            "capture": StepStatus.READY,
        }
        gate.touch()
        again = spawn_worker("it-v1-again", deploy="1")
        assert run.result(timeout=30) == "5 by version 1"
        ran = [(e["step"], e["instance"]) for e in read_log(log_path)]
        assert ran == [("reserve", "it-v1"), ("capture", "it-v1"), ("capture", "it-v1-again")]
        assert [w.stop(timeout=20) for w in (new, again)] == [0, 0]
