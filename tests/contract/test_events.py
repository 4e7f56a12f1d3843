"""Lifecycle events, on every engine: what a start, a worker, a rescue and leadership emit, with
their fields; a handler that raises changes nothing; unsubscribing stops them."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.errors import InvalidArgument, WorkflowFailed
from pypgflow.events import EVENT_NAMES, RunEvent, StepEvent
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """Every event, in order, from whichever thread emitted it."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def named(self, name: str) -> list[Any]:
        with self._lock:
            return [e for e in self.events if e.name == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.named(name)) < count:
            assert time.monotonic() < deadline, f"no {count} {name} events: {self.events}"
            time.sleep(0.02)
        return self.named(name)


def flaky_flow() -> Workflow:
    flow = Workflow("flaky", max_attempts=2)
    calls: dict[int, int] = {}

    @flow.step(backoff=None)
    def first(input: int) -> int:
        calls[input] = calls.get(input, 0) + 1
        if input == 1 and calls[input] == 1:
            raise ValueError("first try fails")
        if input == 2:
            raise ValueError("always fails")
        return input + 1

    @flow.step
    def second(first: int) -> int:
        return first * 10

    return flow


def test_a_worker_emits_each_attempt_and_the_runs_it_finishes(
    make_app: Callable[..., App],
) -> None:
    flow = flaky_flow()
    app = make_app(flow)
    seen = Recorder()
    app.on("*", seen)
    good, bad = app.start_many(flow, [1, 2])
    starting = seen.named("run_starting")
    assert [(e.workflow, e.queue, e.count) for e in starting] == [("flaky", "default", 2)]
    assert list(starting[0].run_ids) == [good.id, bad.id]
    started = seen.named("run_started")
    assert [(e.run_id, e.workflow, e.queue, e.instance_id) for e in started] == [
        (good.id, "flaky", "default", app.instance_id),
        (bad.id, "flaky", "default", app.instance_id),
    ]
    (ended,) = seen.named("start_ended")
    assert (list(ended.inserted), ended.error) == ([good.id, bad.id], None)

    with running_worker(app) as worker:
        assert good.result() == 20
        with pytest.raises(WorkflowFailed):
            bad.result()
        seen.wait_for("run_failed")
        seen.wait_for("run_completed")

    def steps(name: str) -> list[tuple[str, str, int]]:
        return sorted(
            (e.run_id, e.step, e.attempt) for e in seen.named(name) if isinstance(e, StepEvent)
        )

    assert steps("step_started") == sorted(
        [
            (good.id, "first", 1),
            (good.id, "first", 2),
            (good.id, "second", 1),
            (bad.id, "first", 1),
            (bad.id, "first", 2),
        ]
    )
    assert steps("step_completed") == sorted([(good.id, "first", 2), (good.id, "second", 1)])
    assert steps("step_retried") == sorted([(good.id, "first", 1), (bad.id, "first", 1)])
    assert steps("step_failed") == [(bad.id, "first", 2)]
    for event in seen.named("step_completed") + seen.named("step_failed"):
        assert event.workflow == "flaky"
        assert event.queue == "default"
        assert event.instance_id == worker.instance_id
        assert event.duration is not None
        assert event.duration >= 0
    (failed_for_good,) = seen.named("step_failed")
    assert failed_for_good.error.type == "ValueError"
    assert failed_for_good.error.message == "always fails"
    assert all(e.retry_in is not None for e in seen.named("step_retried"))

    (completed,) = seen.named("run_completed")
    assert isinstance(completed, RunEvent)
    assert (completed.run_id, completed.workflow, completed.instance_id) == (
        good.id,
        "flaky",
        worker.instance_id,
    )
    assert completed.duration is not None
    assert completed.duration > 0
    (run_failed,) = seen.named("run_failed")
    assert run_failed.run_id == bad.id
    assert run_failed.error is not None
    assert run_failed.error.message == "always fails"
    claims = seen.named("claim_batch")
    assert claims
    assert all(c.queue == "default" and c.claimed >= 1 for c in claims)
    assert sum(c.claimed for c in claims) == len(seen.named("step_started"))


def test_timeouts_and_cancellations_are_told(make_app: Callable[..., App]) -> None:
    flows = []
    for name, timeout in (("slow", 0.2), ("long", 30.0)):
        flow = Workflow(name, max_attempts=1)

        async def nap(input: float) -> None:
            await asyncio.sleep(input)

        flow.step(name="nap", timeout=timeout)(nap)
        flows.append(flow)
    slow, long = flows
    app = make_app(slow, long)
    seen = Recorder()
    app.on("*", seen)
    timed = app.start(slow, 5.0)
    with running_worker(app, cancel_check_interval=0.1):
        with pytest.raises(WorkflowFailed):
            timed.result()
        (timed_out,) = seen.wait_for("step_timed_out")
        assert (timed_out.run_id, timed_out.step, timed_out.error.type) == (
            timed.id,
            "nap",
            "StepTimeout",
        )
        # the timed-out attempt is also a failed one (no attempt left)
        assert [e.run_id for e in seen.wait_for("step_failed")] == [timed.id]
        assert [e.run_id for e in seen.wait_for("run_failed")] == [timed.id]

        cancelled = app.start(long, 20.0)  # sleeps until cancelled
        seen.wait_for("step_started", 2)
        assert app.cancel(cancelled.id)
        (run_cancelled,) = seen.wait_for("run_cancelled")
        assert (run_cancelled.run_id, run_cancelled.workflow) == (cancelled.id, "long")
        (step_cancelled,) = seen.wait_for("step_cancelled")
        assert (step_cancelled.run_id, step_cancelled.step) == (cancelled.id, "nap")
    assert app.get_run(cancelled.id).status is RunStatus.CANCELLED


def test_a_raising_handler_changes_nothing(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    flow = flaky_flow()
    app = make_app(flow)

    def explode(event: Any) -> None:
        raise RuntimeError(f"handler broke on {event.name}")

    for name in EVENT_NAMES:
        app.on(name, explode)
    seen = Recorder()
    app.on("*", seen)  # called after the raising one
    caplog.set_level(logging.ERROR, logger="pypgflow.events")
    good, bad = app.start_many(flow, [1, 3])
    with running_worker(app):
        assert good.result() == 20
        assert bad.result() == 40
        seen.wait_for("run_completed", 2)
    assert app.get_run(good.id).status is RunStatus.COMPLETED
    assert {e.name for e in seen.events} >= {"run_started", "step_completed", "run_completed"}
    broke = [r for r in caplog.records if r.name == "pypgflow.events"]
    assert broke
    assert all("raised: ignored" in r.getMessage() for r in broke)
    assert any(r.exc_info and "handler broke on" in str(r.exc_info[1]) for r in broke)


def test_unsubscribing_stops_the_events(make_app: Callable[..., App]) -> None:
    flow = flaky_flow()
    app = make_app(flow)
    seen = Recorder()
    unsubscribe = app.on("run_started", seen)
    app.start(flow, 3)
    assert len(seen.events) == 1
    assert unsubscribe() is True
    assert app.events.active is False
    app.start(flow, 3)
    assert len(seen.events) == 1
    assert app.off("run_started", seen) is False
    with pytest.raises(InvalidArgument, match="unknown event 'step_exploded'"):
        app.on("step_exploded", seen)


def test_rescues_and_leadership_are_told_by_the_instance_that_did_them(
    make_app: Callable[..., App],
) -> None:
    flow = flaky_flow()
    app = make_app(flow)
    seen = Recorder()
    app.on("*", seen)
    run = app.start(flow, 3)
    (lost,) = app.engine.claim_tasks(
        "default", 10, instance_id="ghost", workflows=list(app.workflows)
    )
    with running_worker(app, heartbeat_interval=0.2, stale_after=1.0, lease_ttl=1.0) as worker:
        assert run.result() == 40
        (rescued,) = seen.wait_for("step_rescued")
        (gained,) = seen.wait_for("leadership_gained")
    assert (rescued.run_id, rescued.step, rescued.attempt) == (run.id, "first", lost.attempt)
    assert (rescued.lost_instance, rescued.instance_id, rescued.failed) == (
        "ghost",
        worker.instance_id,
        False,
    )
    assert rescued.error.type == "WorkerLost"
    assert gained.instance_id == worker.instance_id
