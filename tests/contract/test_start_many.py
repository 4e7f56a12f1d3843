"""start_many: one run per input, in order, all or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

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


def test_a_batch_starts_each_run_as_a_single_start_would(make_app: Callable[..., App]) -> None:
    """A batch of runs that start alike (no root map step) is written in one go: the runs get
    every root task, with its attempt budget and delay, and run as runs started one by one."""
    flow = Workflow("fork-join")
    flow.step(name="left", max_attempts=2)(lambda input: input + 1)
    flow.step(name="right", max_attempts=4, depends_on=[])(lambda input: input * 10)
    flow.wait_for("approval", signal="approve", depends_on=[], timeout=3600)
    flow.step(name="join", depends_on=["left", "right", "approval"])(
        lambda left, right, approval: left + right if approval else None
    )
    app = make_app(flow)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    waiting = app.start_many(flow, [1, 2], run_at=later)
    runs = app.start_many(flow, range(70))
    single = app.start(flow, 5)

    def steps(run_id: str) -> list[tuple[str, str, int]]:
        return [(s.name, s.status.value, s.attempts) for s in app.get_run(run_id).steps]

    assert (
        steps(runs[5].id)
        == steps(single.id)
        == [
            ("left", "ready", 0),
            ("right", "ready", 0),
            ("approval", "ready", 0),
            ("join", "waiting", 0),
        ]
    )
    approval = {s.name: s for s in app.get_run(runs[0].id).steps}["approval"]
    assert approval.due_at is not None
    assert timedelta(minutes=59) < approval.due_at - datetime.now(UTC) <= timedelta(hours=1)
    for run in waiting:
        info = app.get_run(run.id)
        assert info.scheduled_at == later
        assert {s.name: s.due_at for s in info.steps}["left"] == later
    for run in [*runs, single]:
        app.signal(run.id, "approve", True)
    with running_worker(app):
        assert [r.result(timeout=10) for r in runs] == [n + 1 + n * 10 for n in range(70)]
        assert single.result(timeout=10) == 56
    assert [r.status() for r in waiting] == [RunStatus.PENDING] * 2
