"""Durable delays: a step declared with ``start_delay`` becomes due that long after its
dependencies complete (after its run starts, for a root). Meanwhile its task waits in the
database: no worker claims it, a worker that stops and another that starts change nothing, and
``get_run`` says until when it waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.status import StepStatus, TaskStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def cooling_flow(delay: float | timedelta) -> Workflow:
    flow = Workflow("cool-down")

    @flow.step(depends_on=[])
    def first(input: int) -> float:
        return time.time()

    @flow.step(depends_on=["first"], start_delay=delay)
    def later(first: float) -> float:
        return time.time() - first

    return flow


def test_a_delayed_step_runs_its_delay_after_its_dependency(
    make_app: Callable[..., App],
) -> None:
    flow = cooling_flow(timedelta(seconds=1.2))
    app = make_app(flow)
    run = app.start(flow, 1)
    with running_worker(app):
        deadline = time.monotonic() + 10
        while next(s for s in app.get_run(run.id).steps if s.name == "first").status is not (
            StepStatus.COMPLETED
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        later = next(s for s in app.get_run(run.id).steps if s.name == "later")
        assert later.status is StepStatus.READY
        assert later.due_at is not None
        assert later.due_at > datetime.now(UTC)
        assert later.waiting_for is not None
        assert "its start, due at" in later.waiting_for
        (task,) = [t for t in app.engine.run_tasks(run.id) if t.step == "later"]
        assert task.status is TaskStatus.QUEUED
        assert task.attempt == 0
        gap = run.result(timeout=15)
    assert 1.2 <= gap < 4.0


def test_a_delay_survives_the_worker_that_released_it(make_app: Callable[..., App]) -> None:
    flow = cooling_flow(1.5)
    app = make_app(flow)
    run = app.start(flow, 1)
    with running_worker(app):
        deadline = time.monotonic() + 10
        while not any(
            t.step == "later" for t in app.engine.run_tasks(run.id)
        ):  # first done, later released
            assert time.monotonic() < deadline
            time.sleep(0.02)
    # That worker is gone; a new one (a restart) takes the step when it is due, not before.
    with running_worker(app):
        gap = run.result(timeout=15)
    assert gap >= 1.5


def test_a_delayed_root_waits_from_the_start(make_app: Callable[..., App]) -> None:
    flow = Workflow("delayed-root")

    @flow.step(start_delay=0.8)
    def only(input: float) -> float:
        return time.time() - input

    app = make_app(flow)
    runs = [app.start(flow, time.time()) for _ in range(2)]
    many = app.start_many(flow, [time.time()] * 70)  # a large batch too
    with running_worker(app, {"default": 20}):
        waits = [r.result(timeout=15) for r in [*runs, *many]]
    assert min(waits) >= 0.8
