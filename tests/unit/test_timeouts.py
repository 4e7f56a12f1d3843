"""Timeouts are real: the caller gets StepTimeout at the deadline for sync, async and process steps."""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pypgflow import (
    StepContext,
    StepTimeout,
    Workflow,
    WorkflowFailed,
    WorkflowTimedOut,
    execute,
    execute_async,
)
from pypgflow.defaults import DEFAULT_TIMEOUT
from pypgflow.invocation import StepProcessDied, StepProcessError
from pypgflow.workflow import resolve_options
from tests.unit import process_steps

pytestmark = pytest.mark.timeout(60)

# Deadlines in these tests are short; "promptly" leaves room for a slow CI machine.
PROMPTLY = 3.0


def _assert_timed_out(failure: BaseException, step: str, timeout: float) -> None:
    assert isinstance(failure, WorkflowTimedOut)
    assert isinstance(failure, WorkflowFailed)
    assert isinstance(failure, StepTimeout)
    assert failure.step == step
    assert failure.timeout == timeout
    assert isinstance(failure.__cause__, StepTimeout)
    assert failure.errors[-1].type == "StepTimeout"
    assert f"step {step!r} timed out after {timeout:g} s" in str(failure)


def test_default_timeout_is_30_seconds_and_precedence_is_step_call_workflow() -> None:
    assert DEFAULT_TIMEOUT == 30.0
    flow = Workflow("timeouts", timeout=20.0)
    plain = Workflow("plain")
    own = flow.step(name="own", timeout=5.0)(lambda input: input)
    flow.step(name="inherits")(lambda value: value)
    plain.step(name="default")(lambda input: input)
    assert own is not None
    assert resolve_options(plain, plain.steps["default"]).timeout == 30.0
    assert resolve_options(flow, flow.steps["inherits"]).timeout == 20.0
    assert resolve_options(flow, flow.steps["inherits"], timeout=7.0).timeout == 7.0
    assert resolve_options(flow, flow.steps["own"], timeout=7.0).timeout == 5.0


def test_sync_step_on_the_main_thread_is_interrupted_at_the_deadline() -> None:
    flow = Workflow("inline-timeout")
    finished: list[bool] = []

    @flow.step(timeout=0.2)
    def slow(input: Any) -> None:
        try:
            time.sleep(10)
        except Exception:  # the deadline is not an Exception: step code cannot swallow it
            finished.append(False)
        finished.append(True)

    started = time.monotonic()
    with pytest.raises(WorkflowTimedOut) as info:
        execute(flow, None, max_attempts=1)
    assert time.monotonic() - started < PROMPTLY
    _assert_timed_out(info.value, "slow", 0.2)
    assert finished == []  # really stopped, not left running


def test_sync_step_in_a_thread_times_out_and_its_ctx_is_cancelled() -> None:
    flow = Workflow("thread-timeout")
    release = threading.Event()
    contexts: list[StepContext] = []
    finished = threading.Event()

    @flow.step(timeout=0.2)
    def slow(input: Any, ctx: StepContext) -> None:
        contexts.append(ctx)
        release.wait(10)
        finished.set()

    started = time.monotonic()
    with pytest.raises(WorkflowTimedOut) as info:
        asyncio.run(execute_async(flow, None, max_attempts=1))
    assert time.monotonic() - started < PROMPTLY
    _assert_timed_out(info.value, "slow", 0.2)
    # A thread cannot be killed: the function runs on until it returns, told to stop by ctx.
    assert contexts[0].cancelled
    assert not finished.is_set()
    release.set()
    assert finished.wait(5)


def test_sync_branch_times_out_while_another_branch_runs() -> None:
    flow = Workflow("branch-timeout")
    release = threading.Event()

    @flow.step(depends_on=[], timeout=0.2)
    def stuck(input: Any) -> None:
        release.wait(10)

    @flow.step(depends_on=[])
    def fine(input: Any) -> str:
        return "fine"

    started = time.monotonic()
    try:
        with pytest.raises(WorkflowTimedOut) as info:
            execute(flow, None, max_attempts=1)
    finally:
        release.set()
    assert time.monotonic() - started < PROMPTLY
    _assert_timed_out(info.value, "stuck", 0.2)


def test_async_step_is_cancelled_at_the_deadline() -> None:
    flow = Workflow("async-timeout")
    cancelled: list[bool] = []

    @flow.step(timeout=0.1)
    async def slow(input: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    started = time.monotonic()
    with pytest.raises(WorkflowTimedOut) as info:
        execute(flow, None, max_attempts=1)
    assert time.monotonic() - started < PROMPTLY
    _assert_timed_out(info.value, "slow", 0.1)
    assert cancelled == [True]


def test_async_step_raising_timeout_error_itself_is_not_a_step_timeout() -> None:
    flow = Workflow("own-timeout-error")

    @flow.step(timeout=5.0)
    async def fails(input: Any) -> None:
        raise TimeoutError("the remote end timed out")

    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, max_attempts=1)
    assert not isinstance(info.value, WorkflowTimedOut)
    assert info.value.errors[0].type == "TimeoutError"


def test_call_timeout_applies_to_steps_without_their_own() -> None:
    flow = Workflow("call-timeout")

    @flow.step
    async def slow(input: Any) -> None:
        await asyncio.sleep(10)

    with pytest.raises(WorkflowTimedOut) as info:
        execute(flow, None, timeout=0.1, max_attempts=1)
    _assert_timed_out(info.value, "slow", 0.1)


def test_timed_out_attempts_are_retried() -> None:
    flow = Workflow("retry-timeout")
    attempts: list[int] = []

    @flow.step(timeout=0.1)
    async def sometimes_slow(input: Any, ctx: StepContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.sleep(10)
        return ctx.attempt

    async def no_sleep(delay: float) -> None:
        return None

    assert execute(flow, None, retry="step", sleep=no_sleep) == 2
    assert attempts == [1, 2]


def test_workflow_timed_out_only_when_the_last_attempt_timed_out() -> None:
    flow = Workflow("last-attempt")

    @flow.step(timeout=0.1)
    async def step(input: Any, ctx: StepContext) -> None:
        if ctx.attempt == 1:
            await asyncio.sleep(10)
        raise ValueError("plain failure")

    async def no_sleep(delay: float) -> None:
        return None

    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, max_attempts=2, sleep=no_sleep)
    assert not isinstance(info.value, WorkflowTimedOut)
    assert [e.type for e in info.value.errors] == ["StepTimeout", "ValueError"]


def test_map_element_timeout() -> None:
    flow = Workflow("map-timeout")

    @flow.map(over=None, timeout=0.1)
    async def each(item: int) -> int:
        await asyncio.sleep(10 if item == 2 else 0)
        return item

    with pytest.raises(WorkflowTimedOut) as info:
        execute(flow, [1, 2, 3], max_attempts=1)
    assert info.value.step == "each"
    assert info.value.errors[-1].where == "each[1]"  # the element 2 is at index 1


def test_workflow_timed_out_pickles() -> None:
    flow = Workflow("pickled")

    @flow.step(timeout=0.05)
    async def slow(input: Any) -> None:
        await asyncio.sleep(10)

    with pytest.raises(WorkflowTimedOut) as info:
        execute(flow, None, max_attempts=1)
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, WorkflowTimedOut)
    assert (copy.step, copy.timeout, copy.attempts) == ("slow", 0.05, 1)
    assert copy.errors == info.value.errors
    assert str(copy) == str(info.value)


# -- isolation="process" ---------------------------------------------------------------------------


def test_process_isolated_step_is_killed_at_the_deadline(tmp_path: Path) -> None:
    flow = Workflow("process-timeout")
    flow.step(isolation="process", timeout=1.5)(process_steps.write_pid_then_hang)
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(WorkflowTimedOut) as info:
        execute(flow, str(pid_file), max_attempts=1)
    assert time.monotonic() - started < 1.5 + PROMPTLY
    _assert_timed_out(info.value, "write_pid_then_hang", 1.5)
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


def test_process_isolated_steps_return_results() -> None:
    flow = Workflow("process-results")
    flow.step(name="sync", isolation="process")(process_steps.double)
    flow.step(name="async_", depends_on=[], isolation="process")(process_steps.async_double)
    flow.step(name="who", depends_on=[], isolation="process")(process_steps.whoami)
    result = execute(flow, 21)
    assert result["sync"] == 42
    assert result["async_"] == 42
    who = result["who"]
    assert who["pid"] != os.getpid()
    assert (who["step"], who["attempt"], who["input"]) == ("who", 1, 21)


def test_process_isolated_step_errors_come_back() -> None:
    flow = Workflow("process-errors")
    flow.step(name="plain", isolation="process")(process_steps.fail)
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, "bad value", max_attempts=1)
    cause = info.value.__cause__
    assert isinstance(cause, ValueError)
    assert str(cause) == "bad value"
    assert any("raised in the step's child process" in note for note in cause.__notes__)
    assert "in fail" in info.value.errors[0].traceback  # the child's traceback is kept


@pytest.mark.parametrize(
    ("fn", "error", "text"),
    [
        (process_steps.fail_with_coded_error, StepProcessError, "CodedError: 42: the answer"),
        (process_steps.exit_process, StepProcessError, "SystemExit: 3"),
        (process_steps.die, StepProcessDied, "exited with code 7"),
    ],
)
def test_process_isolated_step_failures_that_cannot_come_back_as_themselves(
    fn: Any, error: type[Exception], text: str
) -> None:
    flow = Workflow("process-odd-errors")
    flow.step(isolation="process")(fn)
    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, max_attempts=1)
    assert isinstance(info.value.__cause__, error)
    assert text in str(info.value.__cause__)
