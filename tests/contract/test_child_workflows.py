"""Child workflows: a subflow step's function returns its child's input, the child runs as a run
of its own (recorded with its parent), and the step completes with the child's result, or fails
with ChildRunFailed; the parent holds no slot meanwhile. A map over a subflow starts one child
per element. Cancelling the parent cancels its unfinished children; resuming it starts new ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow, execute
from pypgflow.app import App
from pypgflow.errors import WorkflowFailed
from pypgflow.status import RunStatus, StepStatus, TaskStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
    return value


def flows(gate: threading.Event | None = None) -> tuple[Workflow, Workflow, Workflow]:
    child = Workflow("resize")

    @child.step
    def scale(input: dict[str, Any]) -> dict[str, Any]:
        if gate is not None:
            gate.wait(20)
        if input.get("broken"):
            raise ValueError(f"cannot read {input['name']}")
        return {"name": input["name"], "width": input["width"] // 2}

    parent = Workflow("publish", max_attempts=1)

    @parent.step(depends_on=[])
    def pick(input: dict[str, Any]) -> dict[str, Any]:
        return input

    @parent.subflow(child, depends_on=["pick"])
    def thumbnail(pick: dict[str, Any]) -> dict[str, Any]:
        return {"name": pick["name"], "width": pick["width"], "broken": pick.get("broken")}

    @parent.step(depends_on=["thumbnail"])
    def announce(thumbnail: dict[str, Any]) -> str:
        return f"{thumbnail['name']} at {thumbnail['width']}px"

    album = Workflow("album")

    @album.step(depends_on=[])
    def photos(input: list[str]) -> list[str]:
        return input

    @album.map(over="photos", subflow=child)
    def resize_each(name: str) -> dict[str, Any]:
        return {"name": name, "width": 100 * len(name)}

    return child, parent, album


def test_a_subflow_step_completes_with_its_child_run_result(
    make_app: Callable[..., App],
) -> None:
    _, parent, _ = flows()
    app = make_app(parent)  # registering the parent registers its child too
    run = app.start(parent, {"name": "cat.png", "width": 800})
    with running_worker(app):
        assert run.result(timeout=15) == "cat.png at 400px"
    info = app.get_run(run.id)
    step = next(s for s in info.steps if s.name == "thumbnail")
    assert step.status is StepStatus.COMPLETED
    assert step.attempts == 1
    assert step.output == {"name": "cat.png", "width": 400}
    (child_id,) = step.child_run_ids
    child = app.get_run(child_id)
    assert child.workflow == "resize"
    assert child.parent_run_id == run.id
    assert child.status is RunStatus.COMPLETED
    assert child.input == {"name": "cat.png", "width": 800, "broken": None}
    assert child.queue == info.queue


def test_the_parent_holds_no_slot_while_its_child_runs(make_app: Callable[..., App]) -> None:
    gate = threading.Event()
    _, parent, _ = flows(gate)
    app = make_app(parent)
    run = app.start(parent, {"name": "dog.png", "width": 60})
    with running_worker(app, {"default": 1}):  # one slot: the child could not run otherwise
        info = wait_until(
            lambda: (i := app.get_run(run.id)).steps[1].child_run_ids and i  # the child started
        )
        waiting = next(s for s in info.steps if s.name == "thumbnail")
        assert waiting.status is StepStatus.READY
        (task,) = [t for t in app.engine.run_tasks(run.id) if t.step == "thumbnail"]
        assert task.status is TaskStatus.QUEUED  # parked: no slot, no instance holds it
        assert waiting.waiting_for == f"its child run {waiting.child_run_ids[0]}"
        gate.set()
        assert run.result(timeout=15) == "dog.png at 30px"


def test_a_failed_child_fails_its_step_with_child_run_failed(
    make_app: Callable[..., App],
) -> None:
    _, parent, _ = flows()
    app = make_app(parent)
    run = app.start(parent, {"name": "bad.png", "width": 10, "broken": True})
    with running_worker(app), pytest.raises(WorkflowFailed) as failed:
        run.result(timeout=15)
    error = failed.value.errors[-1]
    assert error.type == "ChildRunFailed"
    assert "cannot read bad.png" in error.message
    info = app.get_run(run.id)
    assert next(s for s in info.steps if s.name == "announce").status is StepStatus.CANCELLED
    child = app.get_run(next(s for s in info.steps if s.name == "thumbnail").child_run_ids[0])
    assert child.status is RunStatus.FAILED


def test_a_map_over_a_subflow_starts_a_child_per_element(make_app: Callable[..., App]) -> None:
    _, _, album = flows()
    app = make_app(album)
    run = app.start(album, ["a", "bb", "ccc"])
    with running_worker(app, {"default": 4}):
        assert run.result(timeout=15) == [
            {"name": "a", "width": 50},
            {"name": "bb", "width": 100},
            {"name": "ccc", "width": 150},
        ]
    step = next(s for s in app.get_run(run.id).steps if s.name == "resize_each")
    assert len(step.child_run_ids) == 3
    assert {app.get_run(c).parent_run_id for c in step.child_run_ids} == {run.id}


def test_cancelling_the_parent_cancels_its_children_and_a_retry_starts_new_ones(
    make_app: Callable[..., App],
) -> None:
    gate = threading.Event()
    _, parent, _ = flows(gate)
    app = make_app(parent)
    run = app.start(parent, {"name": "fox.png", "width": 20})
    with running_worker(app, {"default": 2}):
        child_id = wait_until(
            lambda: (
                next(s for s in app.get_run(run.id).steps if s.name == "thumbnail").child_run_ids
            )
        )[0]
        assert app.cancel(run.id)
        assert app.get_run(child_id).status is RunStatus.CANCELLED
        gate.set()
        assert app.retry(run.id)
        assert run.result(timeout=15) == "fox.png at 10px"
    children = next(s for s in app.get_run(run.id).steps if s.name == "thumbnail").child_run_ids
    assert len(children) == 1
    assert children[0] != child_id  # a new child for the resumed step


def test_the_executor_runs_a_child_in_process() -> None:
    _, parent, album = flows()
    assert execute(parent, {"name": "owl.png", "width": 8}) == "owl.png at 4px"
    assert execute(album, ["x"]) == [{"name": "x", "width": 50}]
    with pytest.raises(WorkflowFailed) as failed:
        execute(parent, {"name": "no.png", "width": 8, "broken": True})
    assert failed.value.errors[-1].type == "ChildRunFailed"
    assert "child workflow 'resize' failed" in failed.value.errors[-1].message
