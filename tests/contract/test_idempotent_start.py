"""idempotency_key: starting a workflow twice with the same key and input returns the same run,
also when the starts race each other from several threads, and the run executes once. Keys are
scoped to their workflow, and the same key with another input is a conflict."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pypgflow import DatabaseUnavailable, IdempotencyConflict, InvalidArgument, Workflow
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
    first = app.start(flow, {"amount": 5, "currency": "EUR"}, idempotency_key="order-1")
    # the same input, its keys in another order
    again = app.start(flow, {"currency": "EUR", "amount": 5}, idempotency_key="order-1")
    other = app.start(flow, {"amount": 7}, idempotency_key="order-2")
    assert again.id == first.id
    assert other.id != first.id
    assert len(app.list_runs()) == 2
    assert app.get_run(first.id).idempotency_key == "order-1"
    with running_worker(app):
        assert first.result(timeout=5) == 5
        assert other.result(timeout=5) == 7
    assert calls == [{"amount": 5, "currency": "EUR"}, {"amount": 7}]
    # Still the same run after it finished.
    assert app.start(flow, {"amount": 5, "currency": "EUR"}, idempotency_key="order-1").id == (
        first.id
    )


def test_concurrent_starts_with_one_key_make_one_run(make_app: Callable[..., App]) -> None:
    calls: list[object] = []
    flow = make_flow(calls)
    app = make_app(flow)
    threads = 8
    barrier = threading.Barrier(threads)

    def start(i: int) -> str:
        barrier.wait(5)
        return app.start(flow, {"amount": 3}, idempotency_key="race").id

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
            *(app.start_async(flow, {"amount": 2}, idempotency_key="async-key") for _ in range(5))
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


def test_keys_are_scoped_to_their_workflow(make_app: Callable[..., App]) -> None:
    charge = make_flow([])
    refund = Workflow("refund")
    refund.step(name="refund")(lambda input: -input["amount"])
    app = make_app(charge, refund)
    charged = app.start(charge, {"amount": 5}, idempotency_key="order-9")
    refunded = app.start(refund, {"amount": 5}, idempotency_key="order-9")
    assert refunded.id != charged.id
    assert app.start(refund, {"amount": 5}, idempotency_key="order-9").id == refunded.id
    with running_worker(app):
        assert (charged.result(timeout=5), refunded.result(timeout=5)) == (5, -5)


def test_the_same_key_with_another_input_is_a_conflict(make_app: Callable[..., App]) -> None:
    flow = make_flow([])
    app = make_app(flow)
    first = app.start(flow, {"amount": 5}, idempotency_key="order-1")
    for other in ({"amount": 6}, {"amount": 5, "tip": 1}, None, [5]):
        with pytest.raises(IdempotencyConflict) as caught:
            app.start(flow, other, idempotency_key="order-1")
        assert "'order-1'" in str(caught.value)
        assert first.id in str(caught.value)
    assert [r.id for r in app.list_runs()] == [first.id]  # nothing was written

    async def conflicting() -> None:
        await app.start_async(flow, {"amount": 6}, idempotency_key="order-1")

    with pytest.raises(IdempotencyConflict):
        asyncio.run(conflicting())


def test_concurrent_conflicting_starts_make_one_run_and_conflicts(
    make_app: Callable[..., App],
) -> None:
    flow = make_flow([])
    apps = [make_app(flow) for _ in range(4)]
    for app in apps:
        app.start(flow, {"amount": 0})  # open the pools before the race
    barrier = threading.Barrier(len(apps))

    def start(pair: tuple[int, App]) -> str:
        amount, app = pair
        barrier.wait(5)
        try:
            return app.start(flow, {"amount": amount}, idempotency_key="contested").id
        except IdempotencyConflict:
            return "conflict"

    with ThreadPoolExecutor(len(apps)) as pool:
        outcomes = list(pool.map(start, enumerate(apps)))
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1, outcomes
    (run,) = [r for r in apps[0].list_runs() if r.idempotency_key == "contested"]
    assert run.id == winners[0]
    assert run.input == {"amount": outcomes.index(winners[0])}


def test_a_start_that_failed_after_its_commit_is_retried_safely_with_its_key(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection lost once COMMIT was sent: the caller gets DatabaseUnavailable, yet the run
    was stored. Retrying with the same key and input returns that run; nothing runs twice. (A
    start without a key, retried, would start a second run: the key is what makes it safe.)"""
    calls: list[object] = []
    flow = make_flow(calls)
    app = make_app(flow)
    write = app.engine.start_runs

    def committed_then_lost(requests: Any, connection: Any = None) -> list[str]:
        write(requests, connection=connection)
        raise DatabaseUnavailable("lost the connection after COMMIT was sent")

    with monkeypatch.context() as patched:
        patched.setattr(app.engine, "start_runs", committed_then_lost)
        with pytest.raises(DatabaseUnavailable):
            app.start(flow, {"amount": 7}, idempotency_key="order-7")
        with pytest.raises(DatabaseUnavailable):
            app.start(flow, {"amount": 8})
    stored = app.list_runs()
    assert len(stored) == 2  # both failed starts were written
    keyed = next(run for run in stored if run.idempotency_key == "order-7")
    retried = app.start(flow, {"amount": 7}, idempotency_key="order-7")
    assert retried.id == keyed.id
    app.start(flow, {"amount": 8})  # no key: a second run of the same input
    assert len(app.list_runs()) == 3
    with running_worker(app):
        assert retried.result(timeout=10) == 7
    assert calls.count({"amount": 7}) == 1
