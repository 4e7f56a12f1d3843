"""Completing a step, storing its output and releasing its dependents happen in one transaction:
if anything in it fails, nothing of it is kept, and the same outcome can be recorded again."""

from __future__ import annotations

from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.base import Completed
from pypgflow.status import RunStatus, StepStatus

pytestmark = pytest.mark.timeout(30)


def test_a_failure_while_releasing_dependents_keeps_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = Workflow("atomic")
    flow.step(name="first")(lambda input: input)
    flow.step(name="second")(lambda first: first)
    app = App(pg_url, workflows=[flow])
    engine: Any = app.engine
    try:
        run = app.start(flow, 1)
        (task,) = engine.claim_tasks("default", 5, instance_id="t", workflows=["atomic"])
        real_apply = engine._apply

        def broken_apply(conn: Any, changes: Any, **options: Any) -> None:
            real_apply(conn, changes)  # everything written, not committed...
            raise RuntimeError("crash before commit")  # ...and then the transaction fails

        monkeypatch.setattr(engine, "_apply", broken_apply)
        with pytest.raises(RuntimeError, match="crash before commit"):
            engine.finish_tasks([Completed(task, '"out"')])
        monkeypatch.setattr(engine, "_apply", real_apply)

        info = app.get_run(run.id)
        assert info.status is not RunStatus.COMPLETED
        assert [(s.status, s.output) for s in info.steps] == [
            (StepStatus.READY, None),
            (StepStatus.WAITING, None),
        ]
        assert engine.still_running([task.id]) == {task.id}  # the task is still running
        assert engine.claim_tasks("default", 5, instance_id="t", workflows=["atomic"]) == []

        assert engine.finish_tasks([Completed(task, '"out"')]).accepted == 1
        (second,) = engine.claim_tasks("default", 5, instance_id="t", workflows=["atomic"])
        assert second.dependency_outputs == {"first": "out"}
    finally:
        app.close()
