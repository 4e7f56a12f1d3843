"""A worker runs only the workflows registered with its app: runs of other workflows stay queued
for a worker that has them, and the worker says so once in its log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from pypgflow import InvalidArgument, Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from pypgflow.worker import Worker
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def flow_named(name: str) -> Workflow:
    flow = Workflow(name)
    flow.step(name="work")(lambda input: f"{name}:{input}")
    return flow


def test_a_worker_leaves_runs_of_other_workflows_queued(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    flow_a, flow_b = flow_named("A"), flow_named("B")
    starter = make_app(flow_a, flow_b)
    b_runs = [starter.start(flow_b, i) for i in range(3)]
    a_run = starter.start(flow_a, 1)

    only_a = make_app(flow_a)
    checks: list[list[str]] = []
    real_check = only_a.engine.unknown_workflows_waiting

    def counting_check(queues, workflows):  # type: ignore[no-untyped-def]
        checks.append(found := real_check(queues, workflows))
        return found

    only_a.engine.unknown_workflows_waiting = counting_check  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, logger="pypgflow.worker")
    with running_worker(only_a, poll_interval=0.01):
        assert a_run.result(timeout=5) == "A:1"
        late_a = starter.start(flow_a, 2)
        assert late_a.result(timeout=5) == "A:2"
        time.sleep(0.8)  # many idle polls: the check for unknown workflows repeats
    for run in b_runs:
        info = starter.get_run(run.id)
        assert info.status is RunStatus.PENDING
        assert info.steps[0].status is StepStatus.READY
        assert info.steps[0].attempts == 0
    assert len(checks) >= 2
    assert all(found == ["B"] for found in checks)
    warnings = [r for r in caplog.records if "'B'" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "does not have it registered" in warnings[0].getMessage()

    # A worker that has B runs them.
    with running_worker(make_app(flow_b)):
        assert [r.result(timeout=5) for r in b_runs] == ["B:0", "B:1", "B:2"]


def test_the_engine_names_other_workflows_waiting_in_the_given_queues(
    make_app: Callable[..., App],
) -> None:
    flow_a, flow_b = flow_named("A"), flow_named("B")
    app = make_app(flow_a, flow_b)
    app.start(flow_b, 1, queue="emails")
    app.start(flow_a, 1)
    waiting = app.engine.unknown_workflows_waiting
    assert waiting(["emails", "default"], ["A"]) == ["B"]
    assert waiting(["emails", "default"], ["other"]) == ["A", "B"]
    assert waiting(["default"], ["A"]) == []  # B waits in another queue
    assert waiting(["emails"], ["B"]) == []


def test_a_worker_needs_registered_workflows(make_app: Callable[..., App]) -> None:
    with pytest.raises(InvalidArgument, match="no registered workflows"):
        Worker(make_app())
    app = make_app(flow_named("A"))
    for queues in ({"default": 0}, {"": 1}, {"default": True}):
        with pytest.raises(InvalidArgument):
            Worker(app, queues)  # type: ignore[arg-type]


def test_register_after_construction(make_app: Callable[..., App]) -> None:
    app = make_app()
    flow = flow_named("late")
    assert app.register(flow) is flow
    assert app.register(flow) is flow  # again: harmless
    with pytest.raises(InvalidArgument, match="already registered"):
        app.register(flow_named("late"))
    with pytest.raises(InvalidArgument, match="takes a Workflow"):
        app.register("late")  # type: ignore[arg-type]
    run = app.start("late", 3)
    with running_worker(app):
        assert run.result(timeout=5) == "late:3"
