"""start_many: one run per input, in order, all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pypgflow import InvalidArgument, SerializationError, UnknownWorkflow, Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def square_flow() -> Workflow:
    flow = Workflow("square")
    flow.step(name="square")(lambda input: input * input)
    return flow


def test_start_many_starts_one_run_per_input_in_order(make_app: Callable[..., App]) -> None:
    flow = square_flow()
    app = make_app(flow)
    runs = app.start_many(flow, range(100), queue="batch", priority=3)
    assert len(runs) == 100
    assert len({r.id for r in runs}) == 100
    assert all(r.status() is RunStatus.PENDING for r in runs[:3])
    info = app.get_run(runs[7].id)
    assert (info.input, info.queue, info.priority) == (7, "batch", 3)
    with running_worker(app, {"batch": 20}):
        assert [r.result(timeout=5) for r in runs] == [n * n for n in range(100)]


def test_start_many_is_all_or_nothing(make_app: Callable[..., App]) -> None:
    flow = square_flow()
    app = make_app(flow)
    with pytest.raises(SerializationError, match="input 2 of workflow 'square'"):
        app.start_many(flow, [1, 2, object(), 4])
    assert app.list_runs() == []


def test_start_many_edge_cases(make_app: Callable[..., App]) -> None:
    flow = square_flow()
    app = make_app(flow)
    assert app.start_many(flow, []) == []
    assert len(app.start_many("square", (n for n in range(3)), delay=10)) == 3
    for bad in ("abc", {"a": 1}, 5, None):
        with pytest.raises(InvalidArgument, match="iterable of inputs"):
            app.start_many(flow, bad)  # type: ignore[arg-type]
    with pytest.raises(UnknownWorkflow, match=r"'nope'.*registered: square"):
        app.start_many("nope", [1])
    runs = app.list_runs()
    assert len(runs) == 3
    assert all(r.scheduled_at and r.scheduled_at > r.created_at for r in runs)


def test_start_many_async(make_app: Callable[..., App]) -> None:
    flow = square_flow()
    app = make_app(flow)
    runs = asyncio.run(app.start_many_async(flow, [2, 3]))
    with running_worker(app):
        assert [r.result(timeout=5) for r in runs] == [4, 9]
