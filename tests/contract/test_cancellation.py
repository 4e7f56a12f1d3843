"""Cancelling runs: a pending run never runs; a running run's pending steps are cancelled, its
async steps are cancelled, its sync steps see ``ctx.cancelled``; late results change nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from pypgflow import RunCancelled, RunNotFound, Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def test_cancelling_a_pending_run(make_app: Callable[..., App]) -> None:
    flow = Workflow("never")
    calls: list[object] = []
    flow.step(name="first")(calls.append)
    flow.step(name="second")(calls.append)
    app = make_app(flow)
    run = app.start(flow, 1)
    assert run.cancel() is True
    assert run.status() is RunStatus.CANCELLED
    with pytest.raises(RunCancelled) as caught:
        run.result(timeout=1)
    assert caught.value.run_id == run.id
    with running_worker(app):
        time.sleep(0.5)
    assert calls == []
    info = app.get_run(run.id)
    assert info.status is RunStatus.CANCELLED
    assert info.finished_at is not None
    assert {s.status for s in info.steps} == {StepStatus.CANCELLED}
    assert all(s.attempts == 0 for s in info.steps)
    assert app.cancel(run.id) is False  # already finished


def test_cancelling_a_running_async_step_cancels_it(make_app: Callable[..., App]) -> None:
    flow = Workflow("cancel-async")
    started = threading.Event()
    outcome: list[str] = []

    @flow.step
    async def wait_forever(input: object) -> str:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")  # pragma: no cover - must not happen
        return "done"

    @flow.step
    def after(wait_forever: str) -> str:  # pragma: no cover - must not run
        outcome.append("after")
        return wait_forever

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app, cancel_check_interval=0.05):
        assert started.wait(5)
        # The run is marked running just after its first step is claimed.
        deadline = time.monotonic() + 3
        while run.status() is RunStatus.PENDING and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.status() is RunStatus.RUNNING
        assert app.cancel(run.id) is True
        with pytest.raises(RunCancelled):
            run.result(timeout=2)
        deadline = time.monotonic() + 3
        while not outcome and time.monotonic() < deadline:
            time.sleep(0.02)
    assert outcome == ["cancelled"]
    steps = {s.name: s.status for s in app.get_run(run.id).steps}
    assert steps == {"wait_forever": StepStatus.CANCELLED, "after": StepStatus.CANCELLED}


def test_cancelling_a_running_sync_step_sets_ctx_cancelled(make_app: Callable[..., App]) -> None:
    flow = Workflow("cancel-sync")
    started = threading.Event()
    noticed = threading.Event()
    next_ran: list[object] = []

    @flow.step
    def poll(input: object, ctx) -> str:  # type: ignore[no-untyped-def]
        started.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if ctx.cancelled:
                noticed.set()
                return "stopped early"
            time.sleep(0.01)
        return "ran to the end"  # pragma: no cover - must not happen

    @flow.step
    def after(poll: str) -> None:  # pragma: no cover - must not run
        next_ran.append(poll)

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app, cancel_check_interval=0.05):
        assert started.wait(5)
        assert app.cancel(run.id)
        assert noticed.wait(3), "the sync step never saw ctx.cancelled"
        time.sleep(0.3)  # its (ignored) result is recorded meanwhile
    assert next_ran == []
    info = app.get_run(run.id)
    assert info.status is RunStatus.CANCELLED
    assert info.finished_at is not None
    assert info.output is None
    assert [s.status for s in info.steps] == [StepStatus.CANCELLED, StepStatus.CANCELLED]
    assert info.steps[0].output is None
    assert info.steps[0].attempts == 1  # the attempt that was running counts
    assert info.steps[1].attempts == 0


def test_cancel_async_twin(make_app: Callable[..., App]) -> None:
    flow = Workflow("cancel-twin")
    flow.step(name="only")(lambda input: input)
    app = make_app(flow)

    async def scenario() -> None:
        run = await app.start_async(flow, 1)
        assert await app.cancel_async(run.id) is True
        assert await run.status_async() is RunStatus.CANCELLED
        with pytest.raises(RunCancelled):
            await run.result_async(timeout=1)
        assert await app.cancel_async(run.id) is False

    asyncio.run(scenario())


def test_cancel_of_unknown_run_raises(make_app: Callable[..., App]) -> None:
    app = make_app()
    with pytest.raises(RunNotFound):
        app.cancel("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFound):
        app.cancel("not-a-uuid")
