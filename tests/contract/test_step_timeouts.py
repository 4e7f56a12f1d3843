"""Per-step timeouts in durable runs: an attempt that runs past its step's timeout fails with a
StepTimeout recorded, is retried like any failure, and a run whose last attempt timed out raises
WorkflowTimedOut (a WorkflowFailed and a StepTimeout) from ``result``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from pypgflow import Backoff, StepTimeout, Workflow, WorkflowFailed, WorkflowTimedOut
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.01, factor=2, jitter=0)


def test_async_step_times_out_and_is_cancelled(make_app: Callable[..., App]) -> None:
    flow = Workflow("slow-async")
    cancelled: list[int] = []

    @flow.step(timeout=0.2, max_attempts=2, backoff=FAST)
    async def hang(input: object, ctx) -> None:  # type: ignore[no-untyped-def]
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    app = make_app(flow)
    run = app.start(flow, None)
    started = time.monotonic()
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    assert time.monotonic() - started < 3
    assert cancelled == [1, 2]
    failure = caught.value
    assert isinstance(failure, WorkflowTimedOut)
    assert isinstance(failure, StepTimeout)
    assert failure.step == "hang"
    assert failure.attempts == 2
    assert [(e.attempt, e.type) for e in failure.errors] == [
        (1, "StepTimeout"),
        (2, "StepTimeout"),
    ]
    assert "timed out after 0.2 s" in failure.errors[0].message
    step = app.get_run(run.id).steps[0]
    assert step.status is StepStatus.FAILED
    assert step.error is not None
    assert step.error.type == "StepTimeout"


def test_sync_step_times_out(make_app: Callable[..., App]) -> None:
    flow = Workflow("slow-sync")
    release = threading.Event()

    @flow.step(timeout=0.2, max_attempts=1)
    def block(input: object) -> str:
        release.wait(5)  # a thread cannot be killed: it is left to finish on its own
        return "late"

    app = make_app(flow)
    run = app.start(flow, None)
    try:
        with running_worker(app):
            with pytest.raises(WorkflowTimedOut) as caught:
                run.result(timeout=5)
            release.set()
    finally:
        release.set()
    assert [e.type for e in caught.value.errors] == ["StepTimeout"]
    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert info.error.type == "StepTimeout"
    # The late return of the abandoned attempt changed nothing.
    assert info.output is None


def test_a_timed_out_attempt_is_retried_and_may_succeed(make_app: Callable[..., App]) -> None:
    flow = Workflow("slow-then-fast")

    @flow.step(timeout=0.2, max_attempts=3, backoff=FAST)
    async def sometimes_slow(input: object, ctx) -> int:  # type: ignore[no-untyped-def]
        if ctx.attempt == 1:
            await asyncio.sleep(5)
        return ctx.attempt

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app):
        assert run.result(timeout=5) == 2
    step = app.get_run(run.id).steps[0]
    assert step.attempts == 2
    assert [(e.attempt, e.type) for e in step.errors] == [(1, "StepTimeout")]


def test_workflow_timeout_applies_to_steps_without_their_own(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("wf-timeout", timeout=0.2, max_attempts=1)

    @flow.step
    async def slow(input: object) -> None:
        await asyncio.sleep(5)

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(StepTimeout):
        run.result(timeout=5)


def test_a_thread_stuck_after_a_timeout_does_not_starve_the_next_step(
    make_app: Callable[..., App],
) -> None:
    """A timed-out sync function keeps its thread until it returns; the step claimed into the
    freed slot must still get a thread at once, not time out waiting for one."""
    stuck = Workflow("stuck", max_attempts=1)
    release = threading.Event()
    stuck.step(name="block", timeout=0.2)(lambda input: release.wait(5))
    quick = Workflow("quick", max_attempts=1)
    quick.step(name="go", timeout=0.5)(lambda input: "done")
    app = make_app(stuck, quick)
    blocked = app.start(stuck, None, priority=0)
    after = app.start(quick, None, priority=1)
    try:
        with running_worker(app, {"default": 1}):
            with pytest.raises(WorkflowTimedOut):
                blocked.result(timeout=5)
            assert after.result(timeout=5) == "done"
    finally:
        release.set()
