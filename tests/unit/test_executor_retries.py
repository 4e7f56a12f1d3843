"""Retries: retry="workflow" and retry="step", option precedence, backoff timing, WorkflowFailed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest

from pypgflow import (
    AttemptError,
    Backoff,
    StepContext,
    Workflow,
    WorkflowFailed,
    WorkflowTimedOut,
    execute,
    execute_async,
)

pytestmark = pytest.mark.timeout(30)

NO_JITTER = Backoff(jitter=0.0)


class Sleeps:
    """An injected ``sleep``: records each delay instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Flaky:
    """A step body that fails its first ``failures`` calls."""

    def __init__(self, failures: int, result: Any = "ok") -> None:
        self.failures = failures
        self.calls = 0
        self.result = result

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"flaky failure {self.calls}")
        return self.result


def _three_step_flow(middle: Flaky, **options: Any) -> tuple[Workflow, Counter[str]]:
    calls: Counter[str] = Counter()
    flow = Workflow("three", **options)

    @flow.step
    def first(input: int) -> int:
        calls["first"] += 1
        return input + 1

    @flow.step(name="middle")
    def middle_step(value: int) -> Any:
        calls["middle"] += 1
        return middle(value)

    @flow.step
    def last(value: Any) -> Any:
        calls["last"] += 1
        return value

    return flow, calls


# -- the two modes ---------------------------------------------------------------------------------


def test_workflow_mode_reruns_the_whole_workflow_from_its_first_step() -> None:
    flow, calls = _three_step_flow(Flaky(1))
    sleeps = Sleeps()
    assert execute(flow, 1, sleep=sleeps) == "ok"
    assert calls == {"first": 2, "middle": 2, "last": 1}
    assert len(sleeps.delays) == 1


def test_workflow_mode_is_the_default() -> None:
    flow, calls = _three_step_flow(Flaky(1))
    execute(flow, 1, retry="workflow", sleep=Sleeps())
    explicit = dict(calls)
    flow, calls = _three_step_flow(Flaky(1))
    execute(flow, 1, sleep=Sleeps())
    assert dict(calls) == explicit == {"first": 2, "middle": 2, "last": 1}


def test_step_mode_retries_only_the_failed_step_and_keeps_outputs() -> None:
    flow, calls = _three_step_flow(Flaky(2))
    sleeps = Sleeps()
    assert execute(flow, 1, retry="step", sleep=sleeps) == "ok"
    assert calls == {"first": 1, "middle": 3, "last": 1}
    assert len(sleeps.delays) == 2


def test_step_mode_does_not_rerun_a_finished_parallel_branch() -> None:
    flow = Workflow("branches")
    calls: Counter[str] = Counter()
    flaky = Flaky(1)

    @flow.step(depends_on=[])
    def steady(input: Any) -> str:
        calls["steady"] += 1
        return "steady"

    @flow.step(depends_on=[])
    async def wobbly(input: Any) -> str:
        calls["wobbly"] += 1
        await asyncio.sleep(0.01)  # fails after `steady` has finished
        return str(flaky(input))

    assert execute(flow, None, retry="step", sleep=Sleeps()) == {"steady": "steady", "wobbly": "ok"}
    assert calls == {"steady": 1, "wobbly": 2}
    calls.clear()
    flaky.calls = 0
    assert execute(flow, None, retry="workflow", sleep=Sleeps()) == {
        "steady": "steady",
        "wobbly": "ok",
    }
    assert calls == {"steady": 2, "wobbly": 2}


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_ctx_attempt_counts_attempts_in_both_modes(retry: str) -> None:
    flow = Workflow(f"attempts-{retry}")
    seen: list[int] = []

    @flow.step
    def once(input: Any, ctx: StepContext) -> int:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return ctx.attempt

    assert execute(flow, None, retry=retry, sleep=Sleeps()) == 3  # type: ignore[arg-type]
    assert seen == [1, 2, 3]


def test_step_mode_retries_only_the_failed_map_element() -> None:
    flow = Workflow("map-retry")
    calls: Counter[int] = Counter()

    @flow.map(over=None)
    def work(item: int) -> int:
        calls[item] += 1
        if item == 2 and calls[item] == 1:
            raise ValueError("first try of element 2")
        return item * 10

    assert execute(flow, [1, 2, 3], retry="step", sleep=Sleeps()) == [10, 20, 30]
    assert calls == {1: 1, 2: 2, 3: 1}


def test_failure_cancels_a_running_async_branch() -> None:
    flow = Workflow("cancel-sibling")
    cancelled: list[bool] = []

    @flow.step(depends_on=[])
    async def long(input: Any) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    @flow.step(depends_on=[])
    async def broken(input: Any) -> str:
        await asyncio.sleep(0.01)
        raise RuntimeError("broken branch")

    started = time.monotonic()
    with pytest.raises(WorkflowFailed, match="broken branch"):
        execute(flow, None, max_attempts=1)
    assert time.monotonic() - started < 5
    assert cancelled == [True]


def test_execute_async_retries_too() -> None:
    flow, calls = _three_step_flow(Flaky(1))
    assert asyncio.run(execute_async(flow, 1, retry="step", sleep=Sleeps())) == "ok"
    assert calls["first"] == 1
    assert calls["middle"] == 2


# -- max_attempts: step > call > workflow > default ------------------------------------------------


def _always_failing(**options: Any) -> tuple[Workflow, Flaky]:
    flaky = Flaky(1000)
    flow = Workflow("failing", **{k: v for k, v in options.items() if k != "step"})
    flow.step(name="fails", **options.get("step", {}))(flaky)
    return flow, flaky


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_max_attempts_defaults_to_three(retry: str) -> None:
    flow, flaky = _always_failing()
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, retry=retry, sleep=Sleeps())  # type: ignore[arg-type]
    assert flaky.calls == 3
    assert info.value.attempts == 3


@pytest.mark.parametrize(
    ("workflow_option", "call_option", "step_option", "expected"),
    [
        (None, None, None, 3),
        (4, None, None, 4),
        (4, 2, None, 2),
        (4, 2, 5, 5),
        (None, None, 1, 1),
    ],
)
def test_step_mode_max_attempts_precedence(
    workflow_option: int | None, call_option: int | None, step_option: int | None, expected: int
) -> None:
    flow, flaky = _always_failing(max_attempts=workflow_option, step={"max_attempts": step_option})
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, retry="step", max_attempts=call_option, sleep=Sleeps())
    assert flaky.calls == expected
    assert info.value.attempts == expected


@pytest.mark.parametrize(
    ("workflow_option", "call_option", "expected"),
    [(None, None, 3), (4, None, 4), (4, 2, 2), (None, 1, 1)],
)
def test_workflow_mode_passes_come_from_the_call_or_the_workflow_never_the_step(
    workflow_option: int | None, call_option: int | None, expected: int
) -> None:
    flow, flaky = _always_failing(
        max_attempts=workflow_option, step={"max_attempts": 7, "backoff": Backoff(base=99)}
    )
    sleeps = Sleeps()
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, retry="workflow", max_attempts=call_option, sleep=sleeps)
    assert flaky.calls == expected
    assert info.value.attempts == expected
    # The default backoff (1 s, 10 s, ...), not the step's (99 s, ...).
    nominal = [1.0, 10.0, 100.0][: expected - 1]
    assert len(sleeps.delays) == len(nominal)
    assert all(n * 0.9 <= d <= n * 1.1 for d, n in zip(sleeps.delays, nominal, strict=True))


# -- backoff ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_default_backoff_is_1_10_100_1000_seconds_with_jitter(retry: str) -> None:
    flow, _ = _always_failing()
    sleeps = Sleeps()
    with pytest.raises(WorkflowFailed):
        execute(flow, None, retry=retry, max_attempts=5, sleep=sleeps)  # type: ignore[arg-type]
    assert len(sleeps.delays) == 4
    for delay, nominal in zip(sleeps.delays, [1.0, 10.0, 100.0, 1000.0], strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_backoff_without_jitter_is_exact(retry: str) -> None:
    flow, _ = _always_failing(backoff=NO_JITTER)
    sleeps = Sleeps()
    with pytest.raises(WorkflowFailed):
        execute(flow, None, retry=retry, max_attempts=5, sleep=sleeps)  # type: ignore[arg-type]
    assert sleeps.delays == [1.0, 10.0, 100.0, 1000.0]


@pytest.mark.parametrize(
    ("workflow_base", "call_base", "step_base", "expected_first_delay"),
    [
        (None, None, None, 1.0),
        (3.0, None, None, 3.0),
        (3.0, 5.0, None, 5.0),
        (3.0, 5.0, 7.0, 7.0),
    ],
)
def test_step_mode_backoff_precedence(
    workflow_base: float | None,
    call_base: float | None,
    step_base: float | None,
    expected_first_delay: float,
) -> None:
    def backoff(base: float | None) -> Backoff | None:
        return None if base is None else Backoff(base=base, factor=2.0, jitter=0.0)

    flow, _ = _always_failing(
        backoff=backoff(workflow_base) or NO_JITTER, step={"backoff": backoff(step_base)}
    )
    if workflow_base is None:
        flow.backoff = None
    sleeps = Sleeps()
    with pytest.raises(WorkflowFailed):
        execute(flow, None, retry="step", backoff=backoff(call_base), sleep=sleeps)
    if workflow_base is None and call_base is None and step_base is None:
        low, high = sleeps.delays  # the default, with its jitter
        assert 0.9 <= low <= 1.1
        assert 9.0 <= high <= 11.0
    else:
        assert sleeps.delays == [expected_first_delay, expected_first_delay * 2]


def test_workflow_mode_backoff_comes_from_the_call_then_the_workflow() -> None:
    flow, _ = _always_failing(backoff=Backoff(base=3.0, jitter=0.0))
    sleeps = Sleeps()
    with pytest.raises(WorkflowFailed):
        execute(flow, None, sleep=sleeps)
    assert sleeps.delays == [3.0, 30.0]
    sleeps.delays.clear()
    with pytest.raises(WorkflowFailed):
        execute(flow, None, backoff=Backoff(base=0.5, factor=4.0, jitter=0.0), sleep=sleeps)
    assert sleeps.delays == [0.5, 2.0]


def test_real_short_backoff_waits_between_attempts() -> None:
    flow, calls = _three_step_flow(Flaky(2), backoff=Backoff(base=0.02, factor=2.0, jitter=0.0))
    started = time.monotonic()
    assert execute(flow, 1, retry="step") == "ok"
    elapsed = time.monotonic() - started
    assert elapsed >= 0.06  # 0.02 s, then 0.04 s
    assert elapsed < 5
    assert calls["middle"] == 3


# -- WorkflowFailed --------------------------------------------------------------------------------


def _failing_with_details() -> tuple[Workflow, list[ConnectionError]]:
    raised: list[ConnectionError] = []
    flow = Workflow("payments")

    @flow.step
    def charge(input: dict[str, int]) -> dict[str, int]:
        return input

    @flow.step
    def notify(order: dict[str, int]) -> None:
        error = ConnectionError(f"mail server down (try {len(raised) + 1})")
        raised.append(error)
        raise error

    return flow, raised


@pytest.mark.parametrize("retry", ["workflow", "step"])
def test_workflow_failed_carries_every_attempt(retry: str) -> None:
    flow, raised = _failing_with_details()
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, {"amount": 5}, retry=retry, sleep=Sleeps())  # type: ignore[arg-type]
    failure = info.value
    assert failure.workflow == "payments"
    assert failure.step == "notify"
    assert failure.attempts == 3
    assert failure.__cause__ is raised[-1]
    assert len(failure.run_id or "") == 32
    assert [e.attempt for e in failure.errors] == [1, 2, 3]
    for number, error in enumerate(failure.errors, start=1):
        assert isinstance(error, AttemptError)
        assert error.step == "notify"
        assert error.type == "ConnectionError"
        assert error.message == f"mail server down (try {number})"
        assert "Traceback (most recent call last)" in error.traceback
        assert "in notify" in error.traceback
        assert error.traceback.rstrip().endswith(
            f"ConnectionError: mail server down (try {number})"
        )
        assert error.task_index is None
    assert str(failure) == (
        "workflow 'payments' failed at step 'notify' after 3 attempts: "
        "ConnectionError: mail server down (try 3)"
    )
    assert not isinstance(failure, WorkflowTimedOut)


def test_attempt_errors_round_trip_as_dicts() -> None:
    flow, _ = _failing_with_details()
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, {}, max_attempts=1)
    error = info.value.errors[0]
    assert AttemptError.from_dict(error.to_dict()) == error
    assert error.where == "notify"


def test_single_attempt_message_is_singular() -> None:
    flow, _ = _failing_with_details()
    with pytest.raises(WorkflowFailed, match="after 1 attempt: ConnectionError"):
        execute(flow, {}, max_attempts=1)


def test_errors_from_every_failing_step_are_kept() -> None:
    flow = Workflow("two-failures")
    flaky = Flaky(1)

    @flow.step
    def first(input: Any) -> Any:
        return flaky(input)

    @flow.step
    def second(value: Any) -> Any:
        raise KeyError("missing")

    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, retry="step", sleep=Sleeps())
    assert [(e.step, e.attempt, e.type) for e in info.value.errors] == [
        ("first", 1, "ConnectionError"),
        ("second", 1, "KeyError"),
        ("second", 2, "KeyError"),
        ("second", 3, "KeyError"),
    ]
    assert info.value.step == "second"
    assert isinstance(info.value.__cause__, KeyError)


def test_failure_tells_a_running_sync_branch_to_stop() -> None:
    flow = Workflow("stop-sibling")
    stopped = threading.Event()

    @flow.step(depends_on=[])
    def patient(input: Any, ctx: StepContext) -> str:
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        stopped.set()
        return "stopped" if ctx.cancelled else "timed out"

    @flow.step(depends_on=[])
    async def broken(input: Any) -> None:
        await asyncio.sleep(0.02)
        raise RuntimeError("broken branch")

    with pytest.raises(WorkflowFailed, match="broken branch"):
        execute(flow, None, max_attempts=1)
    assert stopped.wait(5)
