"""What a failure means, as the author says: NonRetryable, RetryAfter, retry_on and give_up_on,
decided once (orchestration.step_failed) and obeyed by the executor in both retry modes."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest

from pypgflow import (
    Backoff,
    InvalidArgument,
    NonRetryable,
    RetryAfter,
    StepContext,
    StepTimeout,
    Workflow,
    WorkflowDefinitionError,
    WorkflowFailed,
    execute,
)
from pypgflow.errors import SerializationError
from pypgflow.orchestration import GiveUp, Retry, step_failed
from pypgflow.workflow import StepOptions

pytestmark = pytest.mark.timeout(30)

NO_JITTER = Backoff(base=1.0, factor=10, jitter=0.0)


def options(**overrides: Any) -> StepOptions:
    settings: dict[str, Any] = {"max_attempts": 3, "timeout": 30.0, "backoff": NO_JITTER}
    return StepOptions(**{**settings, **overrides})


class CardDeclined(NonRetryable):
    pass


# -- the rule ---------------------------------------------------------------------------------


def test_an_ordinary_failure_is_retried_after_the_backoff_while_attempts_remain() -> None:
    assert step_failed(KeyError("x"), attempt=1, options=options()) == Retry(1.0)
    assert step_failed(KeyError("x"), attempt=2, options=options()) == Retry(10.0)
    assert step_failed(KeyError("x"), attempt=3, options=options()) == GiveUp()


def test_non_retryable_failures_give_up_at_once_whatever_attempts_remain() -> None:
    verdict = step_failed(CardDeclined("card declined"), attempt=1, options=options())
    assert verdict == GiveUp("CardDeclined is not retried")
    unencodable = SerializationError("the output of step 'x' is not JSON-serializable")
    assert isinstance(step_failed(unencodable, attempt=1, options=options()), GiveUp)
    # even when the step retries only that kind of exception
    retry_all = options(retry_on=(Exception,))
    assert isinstance(step_failed(CardDeclined(), attempt=1, options=retry_all), GiveUp)


def test_retry_after_replaces_the_backoff_and_still_counts_as_an_attempt() -> None:
    assert step_failed(RetryAfter(42), attempt=1, options=options()) == Retry(42.0)
    assert step_failed(RetryAfter(timedelta(minutes=2)), attempt=2, options=options()) == Retry(
        120.0
    )
    assert step_failed(RetryAfter(1), attempt=3, options=options()) == GiveUp()
    # asked for explicitly, so retry_on does not filter it out
    only_timeouts = options(retry_on=(TimeoutError,))
    assert step_failed(RetryAfter(5), attempt=1, options=only_timeouts) == Retry(5.0)


def test_retry_on_retries_only_those_types_and_give_up_on_the_reverse() -> None:
    only = options(retry_on=(TimeoutError, ConnectionError))
    assert step_failed(ConnectionResetError(), attempt=1, options=only) == Retry(1.0)
    assert step_failed(StepTimeout("slow"), attempt=1, options=only) == Retry(1.0)
    assert step_failed(ValueError("bad"), attempt=1, options=only) == GiveUp(
        "ValueError is not one of retry_on"
    )
    never = options(give_up_on=(ValueError,))
    assert step_failed(ValueError("bad"), attempt=1, options=never) == GiveUp(
        "ValueError is one of give_up_on"
    )
    assert step_failed(KeyError("k"), attempt=1, options=never) == Retry(1.0)
    both = options(retry_on=(OSError,), give_up_on=(FileNotFoundError,))
    assert step_failed(ConnectionError(), attempt=1, options=both) == Retry(1.0)
    assert isinstance(step_failed(FileNotFoundError(), attempt=1, options=both), GiveUp)


def test_retry_after_takes_seconds_or_a_timedelta_only() -> None:
    for bad in (-1, float("nan"), float("inf"), "5", True, None):
        with pytest.raises(InvalidArgument, match="RetryAfter takes"):
            RetryAfter(bad)  # type: ignore[arg-type]
    later = RetryAfter(3.5, "rate limited")
    assert (later.delay, later.message) == (3.5, "rate limited")
    assert RetryAfter(2).message == "retry after 2 s"
    copy = pickle.loads(pickle.dumps(later))  # a process-isolated step's exception travels
    assert (type(copy), copy.delay, copy.message) == (RetryAfter, 3.5, "rate limited")


def test_the_options_are_checked_at_declaration() -> None:
    flow = Workflow("checked")
    with pytest.raises(WorkflowDefinitionError, match="retry_on takes an exception class"):
        flow.step(name="a", retry_on=(ValueError, "TimeoutError"))(lambda input: input)  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="give_up_on takes an exception class"):
        flow.step(name="b", give_up_on=())(lambda input: input)
    with pytest.raises(WorkflowDefinitionError, match="workflow 'w': retry_on"):
        Workflow("w", retry_on=int)  # type: ignore[arg-type]


def test_a_steps_own_filter_wins_over_the_workflows() -> None:
    flow = Workflow("layered", give_up_on=(ValueError,), max_attempts=2)
    calls: list[str] = []

    @flow.step(retry_on=ValueError)
    def own(input: int) -> int:
        calls.append("own")
        if len(calls) == 1:
            raise ValueError("once")
        return input

    @flow.step
    def inherited(own: int) -> int:
        calls.append("inherited")
        raise ValueError("never retried")

    with pytest.raises(WorkflowFailed) as caught:
        execute(flow, 1, retry="step", sleep=_no_sleep)
    assert calls == ["own", "own", "inherited"]
    assert caught.value.step == "inherited"
    assert caught.value.attempts == 1


# -- the executor -----------------------------------------------------------------------------


async def _no_sleep(delay: float) -> None:
    _slept.append(delay)


_slept: list[float] = []


@pytest.fixture(autouse=True)
def _reset_sleeps() -> None:
    _slept.clear()


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_non_retryable_ends_the_workflow_at_once_in_both_modes(retry: str) -> None:
    flow = Workflow("charge", max_attempts=5)
    calls: list[int] = []

    @flow.step(max_attempts=5)
    def charge(input: int, ctx: StepContext) -> int:
        calls.append(ctx.attempt)
        raise CardDeclined("card declined")

    with pytest.raises(WorkflowFailed) as caught:
        execute(flow, 1, retry=retry, sleep=_no_sleep)  # type: ignore[arg-type]
    assert calls == [1]
    assert _slept == []
    assert (caught.value.attempts, caught.value.errors[-1].type) == (1, "CardDeclined")
    assert isinstance(caught.value.__cause__, CardDeclined)


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_retry_after_sets_the_wait_before_the_next_attempt_in_both_modes(retry: str) -> None:
    flow = Workflow("limited", max_attempts=3, backoff=NO_JITTER)
    calls: list[int] = []

    @flow.step(max_attempts=3, backoff=NO_JITTER)
    def call_api(input: int, ctx: StepContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RetryAfter(7)
        if ctx.attempt == 2:
            raise ConnectionError("reset")
        return "ok"

    assert execute(flow, 1, retry=retry, sleep=_no_sleep) == "ok"  # type: ignore[arg-type]
    assert calls == [1, 2, 3]
    assert _slept == [7.0, 10.0]  # RetryAfter's wait, then the backoff's for attempt 2


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_a_failure_outside_retry_on_is_not_retried_in_both_modes(retry: str) -> None:
    flow = Workflow("validated", max_attempts=3)
    calls: list[int] = []

    @flow.step(max_attempts=3, retry_on=(TimeoutError, ConnectionError))
    def validate(input: Any, ctx: StepContext) -> Any:
        calls.append(ctx.attempt)
        raise ValueError("input is not an order")

    with pytest.raises(WorkflowFailed, match="ValueError"):
        execute(flow, {}, retry=retry, sleep=_no_sleep)  # type: ignore[arg-type]
    assert calls == [1]
