"""A run's steps column: what steps_text writes, steps_from_text reads back, whatever spelling
the database gives the JSON; texts and decoded steps are reused, never shared."""

from __future__ import annotations

import json

from pypgflow import Workflow, orchestration
from pypgflow.engines.steps import steps_from_text, steps_text
from pypgflow.status import StepStatus


def started_run() -> orchestration.RunState:
    flow = Workflow("shape")
    flow.map(over=None, name="each")(lambda n: n)
    flow.step(name="total", depends_on=["each"])(lambda each: sum(each))
    flow.step(name="side", depends_on=[])(lambda input: input)
    return orchestration.new_run(
        flow,
        run_id="0190b0c4-0000-7000-8000-000000000000",
        input_json="[1, 2, 3]",
        queue="default",
        priority=0,
        changes=orchestration.Changes(),
    )


def fields(steps: dict[str, orchestration.StepState]) -> list[tuple[object, ...]]:
    return [
        (s.name, s.position, s.status, s.depends_on, s.remaining_deps, s.max_attempts, s.is_map,
         s.map_over, s.remaining_tasks, s.task_count)
        for s in steps.values()
    ]  # fmt: skip


def test_steps_round_trip_in_position_order() -> None:
    run = started_run()
    text = steps_text(run.steps)
    assert json.loads(text)["each"] == {
        "position": 0,
        "status": "ready",
        "depends_on": [],
        "remaining_deps": 0,
        "max_attempts": 3,
        "is_map": True,
        "remaining_tasks": 3,
        "task_count": 3,
    }
    assert fields(steps_from_text(text)) == fields(run.steps)
    # PostgreSQL gives jsonb back in its own spelling: spaces, and keys in another order
    respelled = json.dumps(dict(reversed(json.loads(text).items())), indent=1)
    assert list(steps_from_text(respelled)) == list(run.steps)
    assert fields(steps_from_text(respelled)) == fields(run.steps)


def test_each_read_gets_steps_of_its_own() -> None:
    text = steps_text(started_run().steps)
    first, second = steps_from_text(text), steps_from_text(text)
    first["each"].status = StepStatus.COMPLETED
    first["total"].remaining_deps = 0
    assert second["each"].status is StepStatus.READY
    assert second["total"].remaining_deps == 1
    assert steps_from_text(text)["each"].status is StepStatus.READY


def test_a_changed_step_is_written_anew() -> None:
    run = started_run()
    before = steps_text(run.steps)
    run.steps["each"].remaining_tasks = 2
    after = steps_text(run.steps)
    assert json.loads(after)["each"]["remaining_tasks"] == 2
    assert json.loads(before)["each"]["remaining_tasks"] == 3
