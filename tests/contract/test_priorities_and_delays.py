"""Scheduling: priority 0 runs before 9 on a busy worker, whatever the start order; delay= and
run_at= hold a run back until its time. At the engine, a claim takes the best tasks first
(priority, then due time, then age) and none that is not due, and released tasks go back to the
queue without their attempt counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from pypgflow import InvalidArgument, Workflow
from pypgflow.app import App
from pypgflow.engines.base import ClaimedTask
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def recording_flow(order: list[str]) -> Workflow:
    flow = Workflow("record")
    lock = threading.Lock()

    @flow.step
    def record(input: str) -> str:
        with lock:
            order.append(input)
        return input

    return flow


def test_priority_zero_runs_before_nine_even_if_started_later(
    make_app: Callable[..., App],
) -> None:
    order: list[str] = []
    flow = recording_flow(order)
    app = make_app(flow)
    low = [app.start(flow, f"low{i}", priority=9) for i in range(3)]
    mid = app.start(flow, "mid", priority=5)
    high = [app.start(flow, f"high{i}", priority=0) for i in range(3)]
    assert app.get_run(mid.id).priority == 5
    with running_worker(app, {"default": 1}):
        for run in [*low, mid, *high]:
            run.result(timeout=5)
    assert order == ["high0", "high1", "high2", "mid", "low0", "low1", "low2"]


def test_claims_take_the_best_due_tasks_and_released_ones_go_back(
    make_app: Callable[..., App],
) -> None:
    flow = recording_flow([])
    app = make_app(flow)
    engine = app.engine

    def claim(limit: int) -> list[ClaimedTask]:
        return engine.claim_tasks("default", limit, instance_id="me", workflows=["record"])

    order = [(5, "five"), (0, "zero-a"), (9, "nine"), (0, "zero-b"), (3, "three")]
    runs = {name: app.start(flow, name, priority=p).id for p, name in order}
    # Started last, but due an hour ago: first among its priority.
    runs["overdue"] = app.start(
        flow, "overdue", priority=0, run_at=datetime.now(UTC) - timedelta(hours=1)
    ).id
    later = app.start(flow, "later", delay=0.8)
    at = app.start(flow, "at", run_at=datetime.now(UTC) + timedelta(seconds=0.8))
    info = app.get_run(later.id)
    assert info.scheduled_at is not None
    assert 0.75 < (info.scheduled_at - info.created_at).total_seconds() < 0.85

    # Priority first, then due time (the overdue run before those started earlier), then age;
    # a claim of several hands its tasks back in that order too (a worker starts them so).
    best = claim(2)  # overdue was started after zero-a: claim order, not id order
    for _ in range(2):
        (task,) = claim(1)
        best.append(task)
    assert [t.run_input for t in best] == ["overdue", "zero-a", "zero-b", "three"]
    rest = claim(10)  # the two delayed runs are not due yet
    assert [t.run_input for t in rest] == ["five", "nine"]
    claimed = [*best, *rest]
    assert all(t.run_id == runs[t.run_input] and t.attempt == 1 for t in claimed)
    assert claim(10) == []
    due = engine.next_due_in(["default"], ["record"])
    assert due is not None
    assert 0.1 < due <= 0.8

    # Handed back (as by a worker stopping): queued again, the attempt not counted.
    ids = [t.id for t in claimed]
    assert engine.still_running(ids) == set(ids)
    assert engine.release_tasks(ids, instance_id="someone else") == 0  # not theirs to release
    assert engine.still_running(ids) == set(ids)
    assert engine.release_tasks(ids, instance_id="me") == 6
    assert engine.still_running(ids) == set()
    assert app.get_run(runs["three"]).steps[0].attempts == 0
    again = claim(10)
    assert sorted(t.id for t in again) == sorted(ids)
    assert {t.attempt for t in again} == {1}
    assert {later.id, at.id}.isdisjoint(t.run_id for t in again)


def test_priority_is_validated(make_app: Callable[..., App]) -> None:
    flow = recording_flow([])
    app = make_app(flow)
    for bad in (-1, 10, 1.5, True, "0"):
        with pytest.raises(InvalidArgument, match="priority"):
            app.start(flow, "x", priority=bad)  # type: ignore[arg-type]
    assert app.list_runs() == []


def test_delayed_run_does_not_start_before_its_delay(make_app: Callable[..., App]) -> None:
    order: list[str] = []
    started_at: dict[str, float] = {}
    flow = Workflow("timed")

    @flow.step
    def stamp(input: str) -> str:
        started_at[input] = time.monotonic()
        order.append(input)
        return input

    app = make_app(flow)
    began = time.monotonic()
    later = app.start(flow, "later", delay=1.0)
    sooner = app.start(flow, "sooner", delay=timedelta(seconds=0.5))
    now = app.start(flow, "now")
    info = app.get_run(later.id)
    assert info.scheduled_at is not None
    assert info.scheduled_at - info.created_at >= timedelta(seconds=0.99)
    with running_worker(app, poll_interval=0.2):
        assert now.result(timeout=5) == "now"
        assert later.status() is RunStatus.PENDING
        assert sooner.result(timeout=5) == "sooner"
        assert later.result(timeout=5) == "later"
    assert order == ["now", "sooner", "later"]
    assert started_at["sooner"] - began >= 0.5 - 0.05
    assert started_at["later"] - began >= 1.0 - 0.05
    # ...and not long after: an idle worker wakes for the due time, not a full poll later.
    assert started_at["later"] - began < 1.0 + 0.6


def test_run_at_schedules_a_run(make_app: Callable[..., App]) -> None:
    started_at: list[float] = []
    flow = Workflow("at")

    @flow.step
    def stamp(input: object) -> None:
        started_at.append(time.monotonic())

    app = make_app(flow)
    began = time.monotonic()
    when = datetime.now(UTC) + timedelta(seconds=0.6)
    run = app.start(flow, None, run_at=when)
    info = app.get_run(run.id)
    assert info.scheduled_at is not None
    assert abs((info.scheduled_at - when).total_seconds()) < 0.01
    past = app.start(flow, None, run_at=datetime.now(UTC) - timedelta(hours=1))
    with running_worker(app):
        past.result(timeout=5)
        assert run.status() is RunStatus.PENDING
        run.result(timeout=5)
    assert started_at[-1] - began >= 0.6 - 0.05


def test_bad_schedules_are_rejected(make_app: Callable[..., App]) -> None:
    flow = recording_flow([])
    app = make_app(flow)
    with pytest.raises(InvalidArgument, match="delay"):
        app.start(flow, "x", delay=-1)
    with pytest.raises(InvalidArgument, match="delay"):
        app.start(flow, "x", delay=float("nan"))
    with pytest.raises(InvalidArgument, match="delay"):
        app.start(flow, "x", delay="soon")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="timezone-aware"):
        app.start(flow, "x", run_at=datetime.now())
    with pytest.raises(InvalidArgument, match="not both"):
        app.start(flow, "x", delay=1, run_at=datetime.now(UTC))
    assert app.list_runs() == []
