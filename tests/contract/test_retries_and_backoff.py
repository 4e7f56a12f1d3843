"""Per-step retries: attempts counted, every attempt's error kept, the backoff scheduled in the
database, and after the last attempt the step and run failed with the rest of the run cancelled."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pypgflow import Backoff, Workflow, WorkflowFailed
from pypgflow.app import App
from pypgflow.engines.base import Completed, Failed
from pypgflow.errors import AttemptError
from pypgflow.orchestration import Retry
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.01, factor=2, jitter=0)


class Flaky(Exception):
    pass


def test_a_step_succeeds_after_failed_attempts(make_app: Callable[..., App]) -> None:
    flow = Workflow("flaky")
    attempts: list[int] = []

    @flow.step(max_attempts=4, backoff=FAST)
    def wobble(input: int, ctx) -> int:  # type: ignore[no-untyped-def]
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise Flaky(f"not yet ({ctx.attempt})")
        return input + 1

    app = make_app(flow)
    before = datetime.now(UTC)
    run = app.start(flow, 1)
    with running_worker(app):
        assert run.result(timeout=5) == 2
    after = datetime.now(UTC)
    assert attempts == [1, 2, 3]
    step = app.get_run(run.id).steps[0]
    assert step.status is StepStatus.COMPLETED
    assert step.attempts == 3
    assert step.error is None  # the step completed: no current error...
    assert [(e.attempt, e.type, e.message) for e in step.errors] == [  # ...but history is kept
        (1, "Flaky", "not yet (1)"),
        (2, "Flaky", "not yet (2)"),
    ]
    # each failed attempt says when its worker ran it (the dashboard draws it there)
    times = [
        (datetime.fromisoformat(e.started_at or ""), datetime.fromisoformat(e.finished_at or ""))
        for e in step.errors
    ]
    assert before <= times[0][0] <= times[0][1] <= times[1][0] <= times[1][1] <= after
    assert all(e.instance_id for e in step.errors)


def test_last_attempt_fails_step_and_run_and_cancels_the_rest(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("doomed")

    @flow.step
    def begin(input: int) -> int:
        return input

    @flow.step(depends_on=[begin], max_attempts=3, backoff=FAST)
    def broken(begin: int) -> int:
        raise KeyError(f"missing {begin}")

    @flow.step(depends_on=[begin])
    async def other(begin: int) -> int:
        return begin

    @flow.step(depends_on=[broken, other])
    def join(broken: int, other: int) -> int:  # pragma: no cover - never runs
        raise AssertionError("must not run")

    app = make_app(flow)
    run = app.start(flow, 7)
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    failure = caught.value
    assert failure.step == "broken"
    assert failure.attempts == 3
    assert failure.workflow == "doomed"
    assert failure.run_id == run.id
    assert "'broken'" in str(failure)
    assert "3 attempts" in str(failure)
    assert "KeyError" in str(failure)
    assert [(e.step, e.attempt, e.type) for e in failure.errors] == [
        ("broken", 1, "KeyError"),
        ("broken", 2, "KeyError"),
        ("broken", 3, "KeyError"),
    ]
    for error in failure.errors:
        assert error.message == "'missing 7'"
        assert "Traceback (most recent call last)" in error.traceback
        assert 'raise KeyError(f"missing {begin}")' in error.traceback
        assert error.instance_id == app.instance_id

    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert info.error.step == "broken"
    assert info.error.type == "KeyError"
    assert info.error.attempt == 3
    steps = {s.name: s for s in info.steps}
    assert steps["begin"].status is StepStatus.COMPLETED
    assert steps["broken"].status is StepStatus.FAILED
    assert steps["broken"].attempts == 3
    assert steps["broken"].error is not None
    assert steps["broken"].error.attempt == 3
    assert len(steps["broken"].errors) == 3
    assert steps["join"].status is StepStatus.CANCELLED
    assert steps["join"].attempts == 0
    assert info.finished_at is not None


def test_result_raises_for_a_run_that_failed_long_ago(make_app: Callable[..., App]) -> None:
    flow = Workflow("fails-once")

    @flow.step(max_attempts=1)
    def boom(input: object) -> None:
        raise RuntimeError("boom")

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(WorkflowFailed):
        run.result(timeout=5)
    # A fresh handle on another App sees the same failure, with its errors.
    other = make_app(flow)
    with pytest.raises(WorkflowFailed) as caught:
        other.run(run.id).result(timeout=1)
    assert caught.value.attempts == 1
    assert [e.message for e in caught.value.errors] == ["boom"]


def test_backoff_delays_the_next_attempt(make_app: Callable[..., App]) -> None:
    flow = Workflow("patient")
    times: list[float] = []

    @flow.step(max_attempts=3, backoff=Backoff(base=0.3, factor=2, jitter=0))
    def wait_for_it(input: object) -> str:
        times.append(time.monotonic())
        if len(times) < 3:
            raise Flaky("again")
        return "done"

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app, poll_interval=0.05):
        assert run.result(timeout=5) == "done"
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] >= 0.3 - 0.02
    assert gaps[1] >= 0.6 - 0.02
    assert gaps[1] < 2.0


def test_the_retry_is_scheduled_in_the_database(make_app: Callable[..., App]) -> None:
    """A failed attempt's task is queued again, due after the backoff: nothing claims it before,
    and the engine knows when it is due (so idle workers wake for it)."""
    flow = Workflow("scheduled")
    flow.step(name="only", max_attempts=3)(lambda input: input)
    app = make_app(flow)
    run = app.start(flow, 1)
    engine = app.engine
    (task,) = engine.claim_tasks("default", 5, instance_id="me", workflows=["scheduled"])
    assert (task.attempt, task.max_attempts, task.run_input) == (1, 3, 1)
    result = engine.finish_tasks([Failed(task, AttemptError("only", 1, "X", "", ""), Retry(0.8))])
    assert result.accepted == 1
    assert engine.claim_tasks("default", 5, instance_id="me", workflows=["scheduled"]) == []
    due = engine.next_due_in(["default"], ["scheduled"])
    assert due is not None
    assert 0.5 < due <= 0.8
    time.sleep(0.85)
    (again,) = engine.claim_tasks("default", 5, instance_id="me", workflows=["scheduled"])
    assert again.id == task.id
    assert again.attempt == 2
    engine.finish_tasks([Completed(again, "1")])
    assert run.result(timeout=1) == 1
    assert app.get_run(run.id).steps[0].attempts == 2


def test_workflow_level_retry_defaults_apply_to_its_steps(make_app: Callable[..., App]) -> None:
    flow = Workflow("defaults", max_attempts=2, backoff=FAST)
    calls: list[int] = []

    @flow.step
    def once_more(input: object, ctx) -> int:  # type: ignore[no-untyped-def]
        calls.append(ctx.attempt)
        raise Flaky("no")

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    assert calls == [1, 2]
    assert caught.value.attempts == 2
