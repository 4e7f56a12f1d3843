"""The shortest durable path: start the seed's hello workflow, run it on a worker, read it back,
with every field of the run and its steps stored as it happened."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

hello = Workflow("hello")


@hello.step
def greet(input: dict[str, str]) -> dict[str, str]:
    return {**input, "greeting": f"Hello, {input['name']}"}


@hello.step
def shout(state: dict[str, str]) -> dict[str, str]:
    return {**state, "greeting": state["greeting"].upper()}


def near_now(moment: datetime | None) -> bool:
    """A timezone-aware moment within 30 s of now."""
    assert moment is not None
    assert moment.tzinfo is not None
    return abs((datetime.now(UTC) - moment).total_seconds()) < 30


def test_hello_runs_durably_and_is_stored_step_by_step(make_app: Callable[..., App]) -> None:
    app = make_app(hello)
    run = app.start("hello", {"name": "World"})
    assert run.status() is RunStatus.PENDING
    with running_worker(app):
        assert run.result(timeout=10) == {"name": "World", "greeting": "HELLO, WORLD"}
    info = app.get_run(run.id)
    assert info.status is RunStatus.COMPLETED
    assert info.input == {"name": "World"}
    assert info.output == {"name": "World", "greeting": "HELLO, WORLD"}
    assert info.error is None
    assert [s.name for s in info.steps] == ["greet", "shout"]
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in info.steps)
    assert info.steps[0].output == {"name": "World", "greeting": "Hello, World"}
    assert info.steps[1].depends_on == ("greet",)
    assert all(s.instance_id == app.instance_id for s in info.steps)
    for moment in (info.created_at, info.scheduled_at, info.started_at, info.finished_at):
        assert near_now(moment)
    assert info.created_at <= info.started_at <= info.finished_at  # type: ignore[operator]
    greet_info, shout_info = info.steps
    assert greet_info.finished_at is not None
    assert shout_info.started_at is not None
    assert greet_info.finished_at <= shout_info.started_at
    assert [r.id for r in app.list_runs()] == [run.id]
    result = app.engine.run_result(run.id)
    assert result is not None
    assert (result.status, result.output, result.error) == (RunStatus.COMPLETED, info.output, None)
