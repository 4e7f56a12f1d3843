"""The in-process executor: results of linear, DAG and map workflows, sync and async, and concurrency."""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
import time
from typing import Any

import pytest

from pypgflow import (
    Backoff,
    InvalidArgument,
    MapInputError,
    StepContext,
    Workflow,
    WorkflowFailed,
    execute,
    execute_async,
)

pytestmark = pytest.mark.timeout(30)


def test_seed_hello_example() -> None:
    flow = Workflow("hello")

    @flow.step
    def greet(input: dict[str, str]) -> dict[str, str]:
        return {**input, "greeting": f"Hello, {input['name']}"}

    @flow.step(max_attempts=5, timeout=10.0)
    def shout(state: dict[str, str]) -> dict[str, str]:
        return {**state, "greeting": state["greeting"].upper()}

    assert execute(flow, {"name": "World"}) == {"name": "World", "greeting": "HELLO, WORLD"}


def test_linear_chain_passes_each_output_on() -> None:
    flow = Workflow.from_steps(
        "arith", [("add", lambda x: x + 1), ("mul", lambda x: x * 3), ("neg", lambda x: -x)]
    )
    assert execute(flow, 1) == -6
    assert execute(flow, 0) == -3


def test_async_and_mixed_steps() -> None:
    flow = Workflow("mixed")

    @flow.step
    async def fetch(input: int) -> int:
        await asyncio.sleep(0)
        return input + 1

    @flow.step
    def compute(value: int) -> int:
        return value * 2

    @flow.step
    async def store(value: int) -> str:
        return f"stored {value}"

    assert execute(flow, 1) == "stored 4"
    assert asyncio.run(execute_async(flow, 2)) == "stored 6"


def test_diamond_dag_result_is_the_final_step() -> None:
    flow = Workflow("diamond")
    order: list[str] = []

    @flow.step
    def start(input: int) -> int:
        order.append("start")
        return input

    @flow.step(depends_on=[start])
    def plus(start: int) -> int:
        order.append("plus")
        return start + 1

    @flow.step(depends_on=[start])
    async def times(start: int) -> int:
        order.append("times")
        return start * 10

    @flow.step(depends_on=[plus, times])
    def merge(plus: int, times: int) -> dict[str, int]:
        order.append("merge")
        return {"plus": plus, "times": times}

    assert execute(flow, 4) == {"plus": 5, "times": 40}
    assert order[0] == "start"
    assert order[-1] == "merge"
    assert sorted(order[1:3]) == ["plus", "times"]


def test_several_leaves_give_a_dict_keyed_by_step_name() -> None:
    flow = Workflow("leaves")
    flow.step(name="root")(lambda input: input)
    flow.step(name="left", depends_on=["root"])(lambda root: root + 1)
    flow.step(name="right", depends_on=["root"])(lambda root: root - 1)
    flow.step(name="alone", depends_on=[])(lambda input: "alone")
    assert execute(flow, 10) == {"left": 11, "right": 9, "alone": "alone"}


def test_map_over_a_step_keeps_the_order_of_elements() -> None:
    flow = Workflow("map-order")

    @flow.step
    def split(input: str) -> list[str]:
        return input.split()

    @flow.map(over="split")
    async def measure(word: str) -> int:
        # Later elements finish first: the output must still follow the input order.
        await asyncio.sleep(0.001 * (10 - len(word)))
        return len(word)

    @flow.step
    def total(lengths: list[int]) -> dict[str, Any]:
        return {"lengths": lengths, "total": sum(lengths)}

    result = execute(flow, "a bb ccc dddd")
    assert result == {"lengths": [1, 2, 3, 4], "total": 10}


def test_sync_map_and_root_map_over_the_workflow_input() -> None:
    flow = Workflow("root-map")

    @flow.map(over=None)
    def square(value: int) -> int:
        return value * value

    assert execute(flow, [1, 2, 3]) == [1, 4, 9]
    assert execute(flow, []) == []


def test_map_over_a_non_list_is_a_clear_error_and_not_retried() -> None:
    flow = Workflow("map-bad-input")
    calls: list[int] = []

    @flow.step
    def split(input: Any) -> Any:
        calls.append(1)
        return {"not": "a list"}

    @flow.map(over=split)
    def each(item: Any) -> Any:
        return item

    with pytest.raises(WorkflowFailed) as info:
        execute(flow, None, max_attempts=3, backoff=Backoff(base=0))
    failure = info.value
    assert isinstance(failure.__cause__, MapInputError)
    assert isinstance(failure.__cause__, TypeError)
    assert "map step 'each' needs a list from step 'split', got dict" in str(failure)
    assert failure.step == "each"
    assert failure.attempts == 1
    assert calls == [1]  # a definition problem: retrying would not help

    root = Workflow("root-map-bad")
    root.map(over=None, name="each")(lambda item: item)
    with pytest.raises(WorkflowFailed, match="needs a list from the workflow input, got tuple"):
        execute(root, (1, 2))


def test_map_element_failure_raises_workflow_failed_not_a_stray_error() -> None:
    flow = Workflow("map-fail")
    release = asyncio.Event()

    @flow.map(over=None)
    async def work(item: int) -> int:
        if item == 1:
            raise ValueError("element one is bad")
        await release.wait()  # the others are still running when element 1 fails
        return item

    with pytest.raises(WorkflowFailed) as info:
        execute(flow, [0, 1, 2], max_attempts=1)
    assert info.value.step == "work"
    assert info.value.errors[-1].task_index == 1
    assert info.value.errors[-1].where == "work[1]"
    assert "failed at step 'work[1]'" in str(info.value)


# -- concurrency -----------------------------------------------------------------------------------


def _two_sync_branches(barrier: threading.Barrier) -> Workflow:
    flow = Workflow("sync-branches")

    @flow.step(depends_on=[])
    def left(input: Any) -> str:
        barrier.wait()  # passes only if the other branch is waiting at the same time
        return "left"

    @flow.step(depends_on=[])
    def right(input: Any) -> str:
        barrier.wait()
        return "right"

    return flow


def test_sync_branches_run_concurrently_with_execute_on_the_main_thread() -> None:
    assert threading.current_thread() is threading.main_thread()
    flow = _two_sync_branches(threading.Barrier(2, timeout=5))
    assert execute(flow, None, max_attempts=1) == {"left": "left", "right": "right"}


def test_sync_branches_run_concurrently_with_execute_async() -> None:
    flow = _two_sync_branches(threading.Barrier(2, timeout=5))
    assert asyncio.run(execute_async(flow, None, max_attempts=1)) == {
        "left": "left",
        "right": "right",
    }


def test_sync_branches_run_concurrently_from_another_thread() -> None:
    flow = _two_sync_branches(threading.Barrier(2, timeout=5))
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(execute(flow, None, max_attempts=1)))
    thread.start()
    thread.join(10)
    assert results == [{"left": "left", "right": "right"}]


def test_async_branches_run_concurrently() -> None:
    flow = Workflow("async-branches")
    arrived: dict[str, asyncio.Event] = {}

    async def meet(me: str, other: str) -> str:
        arrived.setdefault(me, asyncio.Event()).set()
        await asyncio.wait_for(arrived.setdefault(other, asyncio.Event()).wait(), 5)
        return me

    @flow.step(depends_on=[])
    async def a(input: Any) -> str:
        return await meet("a", "b")

    @flow.step(depends_on=[])
    async def b(input: Any) -> str:
        return await meet("b", "a")

    assert execute(flow, None, max_attempts=1) == {"a": "a", "b": "b"}


def test_sync_branch_does_not_block_an_async_branch() -> None:
    flow = Workflow("sync-and-async")
    signal_from_async = threading.Event()

    @flow.step(depends_on=[])
    def waits(input: Any) -> bool:
        return signal_from_async.wait(5)  # only set if the async branch runs meanwhile

    @flow.step(depends_on=[])
    async def sets(input: Any) -> str:
        await asyncio.sleep(0.01)
        signal_from_async.set()
        return "set"

    assert execute(flow, None, max_attempts=1) == {"waits": True, "sets": "set"}


def test_map_elements_run_concurrently() -> None:
    barrier = threading.Barrier(3, timeout=5)
    flow = Workflow("map-concurrent")

    @flow.map(over=None)
    def work(item: int) -> int:
        barrier.wait()
        return item

    assert execute(flow, [1, 2, 3], max_attempts=1) == [1, 2, 3]


def test_max_workers_bounds_the_sync_steps_running_at_once() -> None:
    flow = Workflow("bounded")
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def busy(input: Any) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return 1

    for i in range(4):
        flow.step(name=f"b{i}", depends_on=[])(busy)
    assert execute(flow, None, max_workers=1) == {f"b{i}": 1 for i in range(4)}
    assert peak == [1]
    # Two workers are enough for two branches that must meet.
    meeting = _two_sync_branches(threading.Barrier(2, timeout=5))
    assert execute(meeting, None, max_workers=2, max_attempts=1) == {
        "left": "left",
        "right": "right",
    }


def test_dependent_starts_as_soon_as_its_own_dependencies_finish() -> None:
    flow = Workflow("eager")
    slow_may_finish = threading.Event()

    @flow.step(depends_on=[])
    def slow(input: Any) -> str:
        assert slow_may_finish.wait(5)
        return "slow"

    @flow.step(depends_on=[])
    def fast(input: Any) -> str:
        return "fast"

    @flow.step(depends_on=[fast])
    def after_fast(fast: str) -> str:
        slow_may_finish.set()  # runs while `slow` still waits: it did not wait for the whole layer
        return fast + "!"

    assert execute(flow, None, max_attempts=1) == {"slow": "slow", "after_fast": "fast!"}


# -- the calling environment -----------------------------------------------------------------------


def test_execute_inside_a_running_event_loop() -> None:
    flow = Workflow.from_steps("in-loop", [("inc", lambda x: x + 1)])

    async def main() -> Any:
        return execute(flow, 1)

    assert asyncio.run(main()) == 2


def test_sync_step_may_use_asyncio_run_and_nested_execute() -> None:
    inner = Workflow.from_steps("inner", [("double", lambda x: x * 2)])
    flow = Workflow("outer")

    @flow.step
    def uses_asyncio(input: int) -> int:
        async def plus_one() -> int:
            return input + 1

        return asyncio.run(plus_one())

    @flow.step
    def nested(value: int) -> int:
        return int(execute(inner, value))

    assert execute(flow, 1) == 4
    assert asyncio.run(execute_async(flow, 2)) == 6


def test_execute_restores_the_alarm_signal_handler() -> None:
    before = signal.getsignal(signal.SIGALRM)
    flow = Workflow.from_steps("alarm", [("noop", lambda x: x)])
    assert execute(flow, 1) == 1
    assert signal.getsignal(signal.SIGALRM) == before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_context_variables_reach_sync_steps_in_threads() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    flow = Workflow("ctxvars")
    barrier = threading.Barrier(2, timeout=5)

    @flow.step(depends_on=[])
    def a(input: Any) -> str:
        barrier.wait()
        return var.get()

    @flow.step(depends_on=[])
    def b(input: Any) -> str:
        barrier.wait()
        return var.get()

    var.set("set by caller")
    assert execute(flow, None, max_attempts=1) == {"a": "set by caller", "b": "set by caller"}


def test_each_execution_has_its_own_run_id() -> None:
    flow = Workflow("run-ids")

    @flow.step
    def who(ctx: StepContext) -> str:
        return ctx.run_id

    first, second = execute(flow), execute(flow)
    assert first != second


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry": "sometimes"}, "retry must be 'workflow' or 'step'"),
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"max_attempts": True}, "max_attempts must be an integer >= 1"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": "1"}, "timeout must be a number of seconds > 0"),
        ({"max_workers": 0}, "max_workers must be an integer >= 1"),
        ({"backoff": 2.0}, "backoff must be a pypgflow.Backoff"),
        ({"sleep": 1}, "sleep must be an async callable"),
    ],
)
def test_invalid_execute_arguments(kwargs: dict[str, Any], message: str) -> None:
    flow = Workflow.from_steps("args", [("noop", lambda x: x)])
    with pytest.raises(InvalidArgument, match=message):
        execute(flow, 1, **kwargs)
    with pytest.raises(InvalidArgument, match=message):
        asyncio.run(execute_async(flow, 1, **kwargs))


def test_execute_needs_a_workflow() -> None:
    with pytest.raises(InvalidArgument, match="execute\\(\\) takes a Workflow, got dict"):
        execute({"not": "a workflow"}, 1)  # type: ignore[arg-type]


def test_step_raising_stop_iteration_fails_at_once_instead_of_hanging() -> None:
    # An asyncio future cannot hold a StopIteration: unconverted, the caller waited for the timeout.
    flow = Workflow("stop-iteration", timeout=10.0, max_attempts=1)

    @flow.step(depends_on=[])
    def empty(input: Any) -> Any:
        return next(iter([]))

    @flow.step(depends_on=[])
    def other(input: Any) -> str:
        return "other"

    for run in (lambda: execute(flow, None), lambda: asyncio.run(execute_async(flow, None))):
        started = time.monotonic()
        with pytest.raises(WorkflowFailed, match="step 'empty' raised StopIteration") as info:
            run()
        assert time.monotonic() - started < 5
        assert isinstance(info.value.__cause__, RuntimeError)
        assert isinstance(info.value.__cause__.__cause__, StopIteration)
    single = Workflow.from_steps("stop-inline", [("empty", lambda x: next(iter([])))])
    with pytest.raises(WorkflowFailed, match="raised StopIteration"):
        execute(single, None, max_attempts=1)  # inline on the main thread
