"""At-least-once across worker restarts: a worker that stops finishes its running steps within
its shutdown timeout, and hands back those that do not finish, without counting the interrupted
attempt; another worker then runs them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def test_a_step_that_outlives_the_shutdown_timeout_is_handed_back(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("long", max_attempts=1)
    started = threading.Event()
    attempts: list[int] = []
    first_worker_done = threading.Event()

    @flow.step
    async def long_step(input: str, ctx) -> str:  # type: ignore[no-untyped-def]
        attempts.append(ctx.attempt)
        started.set()
        if not first_worker_done.is_set():
            await asyncio.sleep(30)
        return input

    app = make_app(flow)
    run = app.start(flow, "again")
    with running_worker(app, shutdown_timeout=0.2):
        assert started.wait(5)
    first_worker_done.set()
    info = app.get_run(run.id)
    assert info.status is RunStatus.RUNNING
    assert info.steps[0].attempts == 0  # the interrupted attempt does not count
    assert app.instances() == []
    with running_worker(app):
        assert run.result(timeout=5) == "again"
    assert attempts == [1, 1]  # max_attempts=1 and yet it ran again: nothing was lost
    assert app.get_run(run.id).steps[0].errors == ()


def test_running_steps_finish_before_the_worker_stops(make_app: Callable[..., App]) -> None:
    flow = Workflow("short")
    started = threading.Event()

    @flow.step
    async def short_step(input: int) -> int:
        started.set()
        await asyncio.sleep(0.3)
        return input + 1

    app = make_app(flow)
    run = app.start(flow, 1)
    with running_worker(app, shutdown_timeout=5):
        assert started.wait(5)
    # Stopped right after the step began: it was allowed to finish, and its result recorded.
    assert run.status() is RunStatus.COMPLETED
    assert run.result(timeout=1) == 2
