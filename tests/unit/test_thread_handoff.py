"""Sync steps in threads: ThreadHandoff and StepThreadPool, directly and through the executor.

Many sync calls at once, each with its own deadline, its errors, cancellation, context variables,
bounded pools, and the worker's way of calling (another executor, no shared hand-off).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pypgflow import StepTimeout, Workflow, WorkflowFailed, WorkflowTimedOut, execute, execute_async
from pypgflow.invocation import StepThreadPool, ThreadHandoff, call_step
from pypgflow.workflow import Step

pytestmark = pytest.mark.timeout(60)

PROMPTLY = 3.0  # room for a slow CI machine


def _step(fn: Callable[..., Any]) -> Step:
    flow = Workflow(f"one-{fn.__name__}")
    flow.step(depends_on=[])(fn)
    return flow.steps[fn.__name__]


def _block_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait, blocking this thread (and its event loop, if any), until ``condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)


class BadValue(Exception):
    pass


def test_a_burst_of_200_sync_calls_gets_its_results_timeouts_and_errors() -> None:
    release = threading.Event()
    stuck_finished: list[int] = []

    def double(value: int) -> int:
        return value * 2

    def boom(value: int) -> int:
        raise BadValue(f"bad {value}")

    def stuck(value: int) -> int:
        release.wait(10)
        stuck_finished.append(value)
        return value

    steps = {"double": _step(double), "boom": _step(boom), "stuck": _step(stuck)}

    def kind(i: int) -> str:
        return {7: "stuck", 13: "boom"}.get(i % 50, "double")

    async def main() -> list[Any]:
        handoff = ThreadHandoff()
        pool = StepThreadPool(16)
        try:
            return await asyncio.gather(
                *(
                    call_step(
                        steps[kind(i)],
                        [i],
                        {},
                        timeout=0.3 if kind(i) == "stuck" else 10.0,
                        pool=pool,
                        handoff=handoff,
                    )
                    for i in range(200)
                ),
                return_exceptions=True,
            )
        finally:
            pool.shutdown(wait=False)

    started = time.monotonic()
    try:
        outcomes = asyncio.run(main())
        elapsed = time.monotonic() - started
        assert not stuck_finished  # the callers did not wait for the stuck threads
    finally:
        release.set()
    assert 0.3 <= elapsed < PROMPTLY
    for i, outcome in enumerate(outcomes):
        if kind(i) == "double":
            assert outcome == i * 2
        elif kind(i) == "boom":
            assert type(outcome) is BadValue
            assert str(outcome) == f"bad {i}"
            frames = traceback.extract_tb(outcome.__traceback__)
            assert frames[-1].name == "boom"  # the step's own frame, where it raised
        else:
            assert type(outcome) is StepTimeout
            assert outcome.step == "stuck"
            assert outcome.timeout == 0.3
    assert sum(kind(i) == "stuck" for i in range(200)) == 4
    assert sum(kind(i) == "boom" for i in range(200)) == 4
    _block_until(lambda: len(stuck_finished) == 4)
    assert sorted(stuck_finished) == [7, 57, 107, 157]  # the threads ran on to the end


def test_completions_in_a_burst_wake_the_loop_once() -> None:
    calls = 50
    release = threading.Event()
    waiting = threading.Semaphore(0)

    def gated(value: int) -> int:
        waiting.release()
        release.wait(10)
        return value

    step = _step(gated)

    async def main() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        handoff = ThreadHandoff()
        pool = StepThreadPool(calls)
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return real(*args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            tasks = [
                asyncio.ensure_future(
                    call_step(step, [i], {}, timeout=10.0, pool=pool, handoff=handoff)
                )
                for i in range(calls)
            ]
            await asyncio.sleep(0)  # every call is handed to the pool
            for _ in range(calls):
                assert waiting.acquire(timeout=5)
            # Hold the loop (a blocking wait) while every call ends: one burst.
            release.set()
            _block_until(lambda: len(handoff._finished) == calls)
            return await asyncio.gather(*tasks), wakes
        finally:
            del loop.call_soon_threadsafe
            release.set()
            pool.shutdown(wait=False)

    results, wakes = asyncio.run(main())
    assert results == list(range(calls))
    assert wakes == 1


def test_each_sync_call_keeps_its_own_deadline() -> None:
    release = threading.Event()

    def stuck(value: float) -> None:
        release.wait(10)

    step = _step(stuck)

    async def main() -> list[tuple[float, float]]:
        handoff = ThreadHandoff()
        pool = StepThreadPool(4)
        started = time.monotonic()

        async def timed(timeout: float) -> tuple[float, float]:
            with pytest.raises(StepTimeout) as info:
                await call_step(step, [timeout], {}, timeout=timeout, pool=pool, handoff=handoff)
            assert info.value.timeout == timeout
            return timeout, time.monotonic() - started

        try:
            return await asyncio.gather(*(timed(t) for t in (0.5, 0.1, 0.3)))
        finally:
            release.set()
            pool.shutdown(wait=False)

    for timeout, elapsed in asyncio.run(main()):
        assert timeout <= elapsed < timeout + 0.15


def test_a_call_timed_out_while_queued_never_starts() -> None:
    release = threading.Event()
    ran: list[str] = []

    def busy(value: Any) -> str:
        ran.append("busy started")
        release.wait(10)
        ran.append("busy")
        return "busy"

    def queued(value: Any) -> str:
        ran.append("queued")
        return "queued"

    async def main() -> None:
        handoff = ThreadHandoff()
        pool = StepThreadPool(1)
        try:
            first = asyncio.ensure_future(
                call_step(_step(busy), [None], {}, timeout=10.0, pool=pool, handoff=handoff)
            )
            await asyncio.sleep(0)
            _block_until(lambda: ran == ["busy started"])  # the pool's one thread is taken
            with pytest.raises(StepTimeout):
                await call_step(_step(queued), [None], {}, timeout=0.1, pool=pool, handoff=handoff)
            release.set()
            assert await first == "busy"
            # The pool's one thread has gone past the abandoned call: the next one runs.
            assert await call_step(_step(queued), [1], {}, timeout=5, pool=pool) == "queued"
        finally:
            release.set()
            pool.shutdown(wait=False)

    asyncio.run(main())
    assert ran == ["busy started", "busy", "queued"]


def test_cancelling_the_caller_abandons_the_call_and_the_handoff_carries_on() -> None:
    release = threading.Event()
    ran: list[str] = []

    def running(value: Any) -> str:
        ran.append("running started")
        release.wait(10)
        ran.append("running finished")
        return "late"

    def queued(value: Any) -> str:
        ran.append("queued")
        return "queued"

    def fine(value: int) -> int:
        return value + 1

    async def main() -> None:
        handoff = ThreadHandoff()
        pool = StepThreadPool(1)
        try:
            first = asyncio.ensure_future(
                call_step(_step(running), [None], {}, timeout=10.0, pool=pool, handoff=handoff)
            )
            second = asyncio.ensure_future(
                call_step(_step(queued), [None], {}, timeout=10.0, pool=pool, handoff=handoff)
            )
            await asyncio.sleep(0.1)
            first.cancel()
            second.cancel()
            for task in (first, second):
                with pytest.raises(asyncio.CancelledError):
                    await task
            release.set()  # the running thread ends after its caller left: nothing to resolve
            results = await asyncio.gather(
                *(
                    call_step(_step(fine), [i], {}, timeout=5.0, pool=pool, handoff=handoff)
                    for i in range(10)
                )
            )
            assert results == list(range(1, 11))
        finally:
            release.set()
            pool.shutdown(wait=False)

    asyncio.run(main())
    assert ran == ["running started", "running finished"]  # the queued call never started


def test_context_variables_are_copied_into_each_sync_call() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    def reads_and_sets(value: int) -> str:
        seen = var.get()
        var.set(f"set by call {value}")
        return seen

    step = _step(reads_and_sets)

    async def main() -> tuple[list[str], str]:
        var.set("set by caller")
        handoff = ThreadHandoff()
        pool = StepThreadPool(4)
        try:
            seen = await asyncio.gather(
                *(
                    call_step(step, [i], {}, timeout=5.0, pool=pool, handoff=handoff)
                    for i in range(20)
                )
            )
        finally:
            pool.shutdown(wait=False)
        return seen, var.get()

    seen, after = asyncio.run(main())
    assert seen == ["set by caller"] * 20  # each call has its own copy: no call sees another's
    assert after == "set by caller"  # and nothing leaks back to the caller


def test_call_step_without_a_handoff_with_another_executor_as_the_worker_calls_it() -> None:
    release = threading.Event()

    def double(value: int) -> int:
        return value * 2

    def boom(value: int) -> int:
        raise BadValue("bad")

    def stuck(value: int) -> int:
        release.wait(10)
        return value

    async def main() -> None:
        pool = ThreadPoolExecutor(4)
        try:
            assert await call_step(_step(double), [21], {}, timeout=5.0, pool=pool) == 42
            assert await call_step(_step(double), [4], {}, timeout=5.0, pool=None) == 8
            with pytest.raises(BadValue, match="bad"):
                await call_step(_step(boom), [1], {}, timeout=5.0, pool=pool)
            started = time.monotonic()
            with pytest.raises(StepTimeout, match=r"step 'stuck' timed out after 0\.2 s"):
                await call_step(_step(stuck), [1], {}, timeout=0.2, pool=pool)
            assert time.monotonic() - started < PROMPTLY
            assert await call_step(_step(double), [1], {}, timeout=float("inf"), pool=pool) == 2
        finally:
            release.set()
            pool.shutdown(wait=False)

    asyncio.run(main())


def test_a_call_another_executor_drops_at_shutdown_is_cancelled_not_left_waiting() -> None:
    release = threading.Event()

    def stuck(value: int) -> int:
        release.wait(10)
        return value

    async def main() -> None:
        pool = ThreadPoolExecutor(1)
        try:
            running = asyncio.ensure_future(
                call_step(_step(stuck), [1], {}, timeout=30.0, pool=pool)
            )
            queued = asyncio.ensure_future(
                call_step(_step(stuck), [2], {}, timeout=30.0, pool=pool)
            )
            await asyncio.sleep(0.1)
            pool.shutdown(wait=False, cancel_futures=True)
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert time.monotonic() - started < PROMPTLY
            release.set()
            assert await running == 1
        finally:
            release.set()

    asyncio.run(main())


def test_executor_fan_out_of_200_sync_branches() -> None:
    flow = Workflow("fan-out-200")

    @flow.step
    def root(input: int) -> int:
        return input

    def branch(i: int) -> Callable[[int], int]:
        return lambda root: root + i

    for i in range(200):
        flow.step(name=f"b{i}", depends_on=["root"])(branch(i))

    @flow.step(depends_on=[f"b{i}" for i in range(200)])
    def join(input: int) -> int:
        return input

    flow.step(name="leaf", depends_on=[f"b{i}" for i in range(200)])(lambda input: "leaf")
    expected = {"join": 1000, "leaf": "leaf"}
    assert execute(flow, 1000, max_attempts=1) == expected
    assert asyncio.run(execute_async(flow, 1000, max_attempts=1)) == expected
    assert execute(flow, 1000, max_attempts=1, max_workers=3) == expected


def test_executor_fan_out_with_failing_and_stuck_branches() -> None:
    release = threading.Event()

    def build(bad: str) -> Workflow:
        flow = Workflow(f"fan-out-{bad}", timeout=10.0, max_attempts=1)

        @flow.step
        def root(input: int) -> int:
            return input

        def branch(i: int) -> Callable[[int], int]:
            def run(root: int) -> int:
                if i == 150:
                    if bad == "raises":
                        raise BadValue(f"branch {i} is bad")
                    release.wait(10)
                return root + i

            return run

        for i in range(200):
            flow.step(name=f"b{i}", depends_on=["root"], timeout=0.3 if i == 150 else None)(
                branch(i)
            )
        flow.step(name="join", depends_on=[f"b{i}" for i in range(200)])(lambda input: input)
        return flow

    with pytest.raises(WorkflowFailed) as failed:
        execute(build("raises"), 1)
    assert failed.value.step == "b150"
    assert isinstance(failed.value.__cause__, BadValue)
    assert failed.value.errors[-1].type == "BadValue"
    assert "branch 150 is bad" in failed.value.errors[-1].traceback
    try:
        started = time.monotonic()
        with pytest.raises(WorkflowTimedOut) as timed_out:
            execute(build("stuck"), 1)
        assert time.monotonic() - started < PROMPTLY
    finally:
        release.set()
    assert timed_out.value.step == "b150"
    assert timed_out.value.timeout == 0.3


def test_step_thread_pool_submit_is_a_bounded_executor() -> None:
    pool = StepThreadPool(2)
    active = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def work(value: int) -> int:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        release.wait(5)
        with lock:
            active -= 1
        if value < 0:
            raise BadValue("negative")
        return value * 10

    try:
        futures = [pool.submit(work, i) for i in range(6)]
        failing = pool.submit(work, -1)
        time.sleep(0.1)
        release.set()
        assert [f.result(5) for f in futures] == [i * 10 for i in range(6)]
        with pytest.raises(BadValue, match="negative"):
            failing.result(5)
        assert most == 2
        assert len(pool._threads) == 2
    finally:
        release.set()
        pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(work, 1)


def test_step_thread_pool_shutdown_cancels_queued_futures() -> None:
    pool = StepThreadPool(1)
    release = threading.Event()
    ran: list[str] = []
    try:
        first = pool.submit(release.wait, 5)
        second = pool.submit(ran.append, "second")
        pool.run_soon(lambda: ran.append("job"))
        pool.shutdown(wait=False, cancel_futures=True)
        assert second.cancelled()
        release.set()
        assert first.result(5) is True
        pool.shutdown(wait=True)
    finally:
        release.set()
    assert ran == []


def test_a_job_that_raises_is_logged_and_the_thread_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = StepThreadPool(1)
    done = threading.Event()

    def bad_job() -> None:
        raise BadValue("job bug")

    try:
        with caplog.at_level(logging.ERROR, logger="pypgflow"):
            pool.run_soon(bad_job)
            pool.run_soon(done.set)
            assert done.wait(5)
    finally:
        pool.shutdown(wait=True)
    assert "a job in the step thread pool raised" in caplog.text
    assert len(pool._threads) == 1
