"""idempotency_key: starting a workflow twice with the same key returns the same run, also when
the starts race each other from several threads, and the run executes once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from pypgflow import InvalidArgument, Workflow
from pypgflow.app import App
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def make_flow(calls: list[object]) -> Workflow:
    flow = Workflow("charge")
    lock = threading.Lock()

    @flow.step
    def charge(input: dict[str, int]) -> int:
        with lock:
            calls.append(input)
        return input["amount"]

    return flow


def test_same_key_returns_the_same_run(make_app: Callable[..., App]) -> None:
    calls: list[object] = []
    flow = make_flow(calls)
    app = make_app(flow)
    first = app.start(flow, {"amount": 5}, idempotency_key="order-1")
    again = app.start(flow, {"amount": 999}, idempotency_key="order-1")
    other = app.start(flow, {"amount": 7}, idempotency_key="order-2")
    assert again.id == first.id
    assert other.id != first.id
    assert len(app.list_runs()) == 2
    assert app.get_run(first.id).idempotency_key == "order-1"
    with running_worker(app):
        assert first.result(timeout=5) == 5
        assert other.result(timeout=5) == 7
    assert calls == [{"amount": 5}, {"amount": 7}]
    # Still the same run after it finished.
    assert app.start(flow, {"amount": 1}, idempotency_key="order-1").id == first.id


def test_concurrent_starts_with_one_key_make_one_run(make_app: Callable[..., App]) -> None:
    calls: list[object] = []
    flow = make_flow(calls)
    app = make_app(flow)
    threads = 8
    barrier = threading.Barrier(threads)

    def start(i: int) -> str:
        barrier.wait(5)
        return app.start(flow, {"amount": i}, idempotency_key="race").id

    for _ in range(3):  # several rounds, new keys each time would hide nothing: reuse the key
        with ThreadPoolExecutor(threads) as pool:
            ids = list(pool.map(start, range(threads)))
        assert len(set(ids)) == 1
    assert len(app.list_runs()) == 1
    with running_worker(app):
        app.run(ids[0]).result(timeout=5)
    assert len(calls) == 1


def test_concurrent_starts_on_separate_apps(make_app: Callable[..., App]) -> None:
    """Separate Apps (as separate processes would be) racing on fresh keys."""
    flow = make_flow([])
    apps = [make_app(flow) for _ in range(4)]
    for app in apps:
        app.start(flow, {"amount": 0})  # open the pools before the race
    for round_ in range(5):
        barrier = threading.Barrier(len(apps))

        def start(app: App, key: str = f"key-{round_}", b: threading.Barrier = barrier) -> str:
            b.wait(5)
            return app.start(flow, {"amount": 1}, idempotency_key=key).id

        with ThreadPoolExecutor(len(apps)) as pool:
            ids = list(pool.map(start, apps))
        assert len(set(ids)) == 1, ids
    assert len(apps[0].list_runs(limit=100)) == 4 + 5


def test_async_start_with_a_key(make_app: Callable[..., App]) -> None:
    flow = make_flow([])
    app = make_app(flow)

    async def scenario() -> list[str]:
        runs = await asyncio.gather(
            *(app.start_async(flow, {"amount": i}, idempotency_key="async-key") for i in range(5))
        )
        return [r.id for r in runs]

    assert len(set(asyncio.run(scenario()))) == 1


def test_invalid_keys_are_rejected(make_app: Callable[..., App]) -> None:
    flow = make_flow([])
    app = make_app(flow)
    for key in ("", "x" * 501, 42):
        with pytest.raises(InvalidArgument, match="idempotency_key"):
            app.start(flow, {"amount": 1}, idempotency_key=key)  # type: ignore[arg-type]
    assert app.list_runs() == []
