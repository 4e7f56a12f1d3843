"""Several workers on the same queues share the work: every step runs once, every run finishes,
and each worker only takes as many steps as its slots allow."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from pypgflow import Backoff, Workflow
from pypgflow.app import App
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def test_three_workers_run_each_step_once(make_app: Callable[..., App]) -> None:
    flow = Workflow("shared", backoff=Backoff(base=0.01, factor=2, jitter=0))
    calls: Counter[tuple[str, str, int | None]] = Counter()
    instances: Counter[str] = Counter()
    lock = threading.Lock()

    def record(ctx) -> None:  # type: ignore[no-untyped-def]
        with lock:
            calls[(ctx.run_id, ctx.step, ctx.task_index)] += 1
            instances[ctx.instance_id] += 1

    @flow.step
    def split(input: int, ctx) -> list[int]:  # type: ignore[no-untyped-def]
        record(ctx)
        return list(range(input % 4))

    @flow.map(over=split)
    def each(item: int, ctx) -> int:  # type: ignore[no-untyped-def]
        record(ctx)
        return item

    @flow.step
    def total(each: list[int], input: int, ctx) -> int:  # type: ignore[no-untyped-def]
        record(ctx)
        time.sleep(0.002)
        return input * 100 + sum(each)

    apps = [make_app(flow, instance_id=f"worker-{i}") for i in range(3)]
    runs = apps[0].start_many(flow, range(60))
    with (
        running_worker(apps[0], {"default": 4}),
        running_worker(apps[1], {"default": 4}),
        running_worker(apps[2], {"default": 4}),
    ):
        results = [r.result(timeout=15) for r in runs]
    assert results == [n * 100 + sum(range(n % 4)) for n in range(60)]
    assert set(calls.values()) == {1}  # no step or element ran twice
    assert len(calls) == 60 + sum(n % 4 for n in range(60)) + 60  # and none was skipped
    assert set(instances) <= {"worker-0", "worker-1", "worker-2"}
    assert len(instances) >= 2  # the work was shared


def test_slots_bound_concurrency_per_queue(make_app: Callable[..., App]) -> None:
    flow = Workflow("bounded")
    running = Counter[str]()
    peak = Counter[str]()
    lock = threading.Lock()

    @flow.step
    def hold(input: str, ctx) -> str:  # type: ignore[no-untyped-def]
        queue = input
        with lock:
            running[queue] += 1
            peak[queue] = max(peak[queue], running[queue])
        time.sleep(0.05)
        with lock:
            running[queue] -= 1
        return queue

    app = make_app(flow)
    runs = [app.start(flow, "a", queue="a") for _ in range(12)]
    runs += [app.start(flow, "b", queue="b") for _ in range(12)]
    with running_worker(app, {"a": 2, "b": 5}):
        for run in runs:
            run.result(timeout=10)
    assert peak["a"] == 2
    assert 2 < peak["b"] <= 5


def test_tasks_claimed_ahead_while_cancellations_are_checked_all_run(
    make_app: Callable[..., App],
) -> None:
    # The cancellation check reads which held tasks are still running; claims landing while it
    # reads must not be taken for cancelled ones (they were dropped, and their runs stayed
    # running for ever). A check every few milliseconds makes that overlap common.
    flow = Workflow("ahead")

    @flow.step
    async def work(input: int) -> int:
        return input

    app = make_app(flow)
    runs = app.start_many(flow, range(1500))
    with running_worker(app, {"default": 4}, cancel_check_interval=0.002):
        results = [r.result(timeout=20) for r in runs]
    assert results == list(range(1500))
