"""The shortest durable path: start the seed's hello workflow, run it on a worker, read it back."""

from __future__ import annotations

from collections.abc import Callable

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


def test_hello_runs_durably_and_is_stored_step_by_step(make_app: Callable[..., App]) -> None:
    app = make_app(hello)
    run = app.start("hello", {"name": "World"})
    assert run.status() is RunStatus.PENDING
    with running_worker(app):
        assert run.result(timeout=10) == {"name": "World", "greeting": "HELLO, WORLD"}
    info = app.get_run(run.id)
    assert info.status is RunStatus.COMPLETED
    assert [s.name for s in info.steps] == ["greet", "shout"]
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in info.steps)
    assert info.steps[0].output == {"name": "World", "greeting": "Hello, World"}
    assert all(s.instance_id == app.instance_id for s in info.steps)
