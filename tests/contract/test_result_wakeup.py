"""Waiting for a result is woken by the engine's announcement that the run finished, not by
polling: a finish is seen within milliseconds of its commit, by any number of waiters, sync or
async; every way a run can finish is announced; and a lost announcement delays a result (until
the waiter's safety re-check), never loses it."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pypgflow import RunCancelled, Workflow, WorkflowFailed, defaults
from pypgflow.app import App, Run
from pypgflow.engines.base import Began, Completed, Failed, FinishResult, Outcome
from pypgflow.errors import AttemptError
from pypgflow.orchestration import GiveUp
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(90)


def commit_times(app: App, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """When the outcome of each run's step was committed: the moment the worker's write of its
    batch returned (filled in as the worker writes)."""
    committed: dict[str, float] = {}
    real = app.engine.finish_tasks

    def finish_tasks(outcomes: Sequence[Outcome]) -> FinishResult:
        result = real(outcomes)
        now = time.monotonic()
        for outcome in outcomes:
            if not isinstance(outcome, Began):  # a note that the step runs, not its end
                committed.setdefault(outcome.task.run_id, now)
        return result

    monkeypatch.setattr(app.engine, "finish_tasks", finish_tasks)
    return committed


def commit_of(committed: dict[str, float], run_id: str) -> float:
    """The run's commit time; the worker thread records it just after the waiter may wake."""
    deadline = time.monotonic() + 5
    while run_id not in committed:
        assert time.monotonic() < deadline, f"no outcome of {run_id} was written"
        time.sleep(0.001)
    return committed[run_id]


def napping_flow(name: str, seconds: float) -> Workflow:
    flow = Workflow(name)

    @flow.step
    def nap(input: Any) -> Any:
        time.sleep(seconds)
        return input

    return flow


def test_a_waiting_result_wakes_within_milliseconds_of_the_commit(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps long enough for a poller's pause to have grown to its 100 ms, of lengths spread over
    # 100 ms: a poll would see their finish 50 ms late on average.
    flow = Workflow("nap")

    @flow.step
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    app = make_app(flow)
    committed = commit_times(app, monkeypatch)
    gaps: list[float] = []
    with running_worker(app, poll_interval=5.0):
        for i in range(20):
            seconds = 0.35 + 0.005 * i
            run = app.start(flow, seconds)
            assert run.result(timeout=10) == seconds
            returned = time.monotonic()
            gaps.append(max(0.0, returned - commit_of(committed, run.id)))
    print(
        f"commit -> result() (ms): p50 {statistics.median(gaps) * 1000:.1f}, "
        f"max {max(gaps) * 1000:.1f}, all {sorted(round(g * 1000, 1) for g in gaps)}"
    )
    # Typically one or two milliseconds; the bound is generous for a busy machine, and still
    # well under what polling every 100 ms gives.
    assert statistics.median(gaps) < 0.03, gaps


def test_fifty_waiters_on_fifty_runs_all_return(make_app: Callable[..., App]) -> None:
    flow = napping_flow("many", 0.02)
    app = make_app(flow)
    runs = app.start_many(flow, range(50))
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wait(index: int, run: Run) -> None:
        try:
            value = run.result(timeout=30)
        except BaseException as exc:  # surfaced below
            with lock:
                errors.append(exc)
        else:
            with lock:
                results[index] = value

    threads = [threading.Thread(target=wait, args=(i, run)) for i, run in enumerate(runs)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # every waiter is waiting before any run finishes
    assert not results
    with running_worker(app, {"default": 10}):
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert results == {i: i for i in range(50)}


def test_async_waiters_are_woken_and_leave_the_loop_free(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = napping_flow("async-nap", 0.3)
    app = make_app(flow)
    committed = commit_times(app, monkeypatch)

    async def scenario() -> tuple[list[Any], dict[str, float], list[float]]:
        runs = await app.start_many_async(flow, range(10))
        returned: dict[str, float] = {}
        ticks: list[float] = []
        done = asyncio.Event()

        async def wait(run: Run) -> Any:
            value = await run.result_async(timeout=20)
            returned[run.id] = time.monotonic()
            return value

        async def tick() -> None:
            while not done.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        values = await asyncio.gather(*(wait(run) for run in runs))
        done.set()
        await ticker
        return values, returned, ticks

    with running_worker(app, {"default": 10}, poll_interval=5.0):
        values, returned, ticks = asyncio.run(scenario())
    assert values == list(range(10))
    gaps = [max(0.0, at - commit_of(committed, run_id)) for run_id, at in returned.items()]
    print(f"commit -> result_async() (ms): {sorted(round(g * 1000, 1) for g in gaps)}")
    assert statistics.median(gaps) < 0.05, gaps
    # The loop went on ticking every 10 ms while ten coroutines waited.
    pauses = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 15
    assert max(pauses) < 0.25, pauses


def test_a_lost_announcement_delays_a_result_but_never_loses_it(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "RESULT_RECHECK_INTERVAL", 0.3)
    flow = napping_flow("deaf", 0.0)
    app = make_app(flow)
    dropped: list[str] = []
    real = app.engine.listen_finished

    def deaf(on_finished: Callable[[str], None]) -> Callable[[], None] | None:
        # Every announcement, and every wake of a (re)connection, is lost on the way.
        return real(dropped.append)

    monkeypatch.setattr(app.engine, "listen_finished", deaf)
    run = app.start(flow, None)
    outcome: list[BaseException] = []
    returned: list[float] = []

    def wait() -> None:
        try:
            run.result(timeout=10)
        except BaseException as exc:
            outcome.append(exc)
        returned.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    cancelled_at = time.monotonic()
    assert run.cancel() is True
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RunCancelled), outcome
    # Seen by the re-check (every 0.3 s here), although its announcement was dropped.
    assert returned[0] - cancelled_at < 3.0
    deadline = time.monotonic() + 5
    while run.id not in dropped:
        assert time.monotonic() < deadline, "the cancel was never announced"
        time.sleep(0.01)


def test_every_way_a_run_finishes_is_announced(make_app: Callable[..., App]) -> None:
    one = Workflow("one")
    one.step(name="only", max_attempts=1)(lambda input: input)
    mapped = Workflow("mapped")
    mapped.step(name="produce")(lambda input: input)
    mapped.map(over="produce", name="each")(lambda item: item)
    input_map = Workflow("input-map")
    input_map.map(over=None, name="each")(lambda item: item)
    app = make_app(one, mapped, input_map)
    engine = app.engine
    heard: set[str] = set()
    changed = threading.Condition()

    def on_finished(run_id: str) -> None:
        with changed:
            heard.add(run_id)
            changed.notify_all()

    stop = engine.listen_finished(on_finished)
    assert stop is not None

    def announced(run_id: str) -> bool:
        with changed:
            return changed.wait_for(lambda: run_id in heard, timeout=5)

    def claim(workflow: str, instance_id: str = "tester") -> Any:
        (task,) = engine.claim_tasks("default", 1, instance_id=instance_id, workflows=[workflow])
        return task

    try:
        completed = app.start(one, 1)
        engine.finish_tasks([Completed(claim("one"), "1")])
        assert announced(completed.id)

        failed = app.start(one, 2)
        task = claim("one")
        error = AttemptError(step="only", attempt=1, type="ValueError", message="no", traceback="")
        engine.finish_tasks([Failed(task, error, GiveUp())])
        assert announced(failed.id)

        cancelled = app.start(one, 3, delay=60)
        assert cancelled.cancel() is True
        assert announced(cancelled.id)

        # A lost task with no attempts left fails its run in the rescue.
        rescued = app.start(one, 4)
        claim("one", instance_id="ghost")
        result = engine.hand_back_lost_tasks("ghost", keep=[], max_rescues=3, reason="gone")
        assert result.failed == 1
        assert announced(rescued.id)

        # A map over something other than a list fails the run as the map would start.
        not_a_list = app.start(mapped, {"a": 1})
        engine.finish_tasks([Completed(claim("mapped"), '{"a": 1}')])
        assert announced(not_a_list.id)

        # A map over an empty input completes as the run starts.
        empty = app.start(input_map, [])
        assert announced(empty.id)
    finally:
        stop()
    assert completed.result(timeout=1) == 1
    with pytest.raises(WorkflowFailed):
        failed.result(timeout=1)
    with pytest.raises(RunCancelled):
        cancelled.result(timeout=1)
    with pytest.raises(WorkflowFailed, match="WorkerLost"):
        rescued.result(timeout=1)
    with pytest.raises(WorkflowFailed, match="MapInputError"):
        not_a_list.result(timeout=1)
    assert empty.result(timeout=1) == []
    assert app.get_run(empty.id).status is RunStatus.COMPLETED
