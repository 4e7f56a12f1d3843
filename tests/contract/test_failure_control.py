"""Durable runs obey the author's failure rules on every engine: NonRetryable and an output that
is not JSON fail the step at once, RetryAfter schedules the next attempt in the database,
retry_on/give_up_on pick what is retried."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from pypgflow import Backoff, NonRetryable, RetryAfter, StepContext, Workflow, WorkflowFailed
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.01, factor=2, jitter=0)


class CardDeclined(NonRetryable):
    pass


def failed_run(app: App, flow: Workflow, input: object) -> WorkflowFailed:
    run = app.start(flow, input)
    with running_worker(app, poll_interval=0.05), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=10)
    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    return caught.value


def test_non_retryable_fails_the_step_and_run_at_its_first_attempt(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("charge")
    calls: list[int] = []

    @flow.step(max_attempts=5, backoff=FAST)
    def charge(input: dict[str, int], ctx: StepContext) -> str:
        calls.append(ctx.attempt)
        raise CardDeclined(f"card declined for {input['amount']}")

    app = make_app(flow)
    failure = failed_run(app, flow, {"amount": 12})
    assert calls == [1]
    assert failure.attempts == 1
    (error,) = failure.errors
    assert (error.type, error.message) == ("CardDeclined", "card declined for 12")
    step = app.get_run(failure.run_id or "").steps[0]
    assert (step.status, step.attempts) == (StepStatus.FAILED, 1)


def test_an_output_that_is_not_json_is_not_retried(make_app: Callable[..., App]) -> None:
    flow = Workflow("typed")
    calls: list[int] = []

    @flow.step(max_attempts=4, backoff=FAST)
    def price(input: object, ctx: StepContext) -> object:
        calls.append(ctx.attempt)
        return {1, 2}  # a set: no JSON for it

    app = make_app(flow)
    failure = failed_run(app, flow, None)
    assert calls == [1]
    assert failure.errors[-1].type == "SerializationError"
    assert "not JSON-serializable" in failure.errors[-1].message


def test_retry_after_schedules_the_next_attempt_at_that_delay(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("rate_limited")
    times: list[float] = []

    @flow.step(max_attempts=3, backoff=Backoff(base=30, jitter=0))
    def call_api(input: object, ctx: StepContext) -> str:
        times.append(time.monotonic())
        if ctx.attempt == 1:
            raise RetryAfter(0.4, "429 Too Many Requests")
        return "sent"

    app = make_app(flow)
    run = app.start(flow, None)
    with running_worker(app, poll_interval=0.05):
        assert run.result(timeout=10) == "sent"
    assert len(times) == 2
    # the step's delay, not the backoff's 30 s
    assert 0.4 - 0.05 <= times[1] - times[0] < 5
    step = app.get_run(run.id).steps[0]
    assert step.attempts == 2
    assert [(e.type, e.message) for e in step.errors] == [("RetryAfter", "429 Too Many Requests")]


def test_retry_on_and_give_up_on_choose_what_is_retried(make_app: Callable[..., App]) -> None:
    flow = Workflow("filtered")
    calls: dict[str, list[int]] = {"fetch": [], "validate": []}

    @flow.step(max_attempts=3, backoff=FAST, retry_on=(TimeoutError, ConnectionError))
    def fetch(input: object, ctx: StepContext) -> str:
        calls["fetch"].append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionResetError("reset by peer")
        return "page"

    @flow.step(max_attempts=3, backoff=FAST, give_up_on=(ValueError,))
    def validate(fetch: str, ctx: StepContext) -> Decimal:
        calls["validate"].append(ctx.attempt)
        raise ValueError(f"{fetch} is not a price")

    app = make_app(flow)
    failure = failed_run(app, flow, None)
    assert calls == {"fetch": [1, 2, 3], "validate": [1]}
    assert failure.step == "validate"
    assert "ValueError: page is not a price" in str(failure)
    assert [(e.step, e.type) for e in failure.errors if e.step == "validate"] == [
        ("validate", "ValueError")
    ]
