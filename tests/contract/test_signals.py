"""Signals: a wait step (``Workflow.wait_for``) waits in the database, holding no worker slot,
until ``App.signal`` sends its run the signal, and completes with the signal's data. A signal
sent before the step is reached is kept and taken when it is; a signal to a finished or unknown
run is refused; a wait step whose timeout passes fails with SignalTimeout, its dependents never
run; a resumed run waits again; each signal is taken by one wait step only."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from pypgflow import Workflow, execute
from pypgflow.app import App
from pypgflow.errors import (
    InvalidArgument,
    NotSupported,
    RunFinished,
    RunNotFound,
    SerializationError,
    WorkflowFailed,
)
from pypgflow.status import RunStatus, StepStatus, TaskStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)


def approval_flow(*, timeout: float | timedelta | None = None) -> tuple[Workflow, list[str]]:
    calls: list[str] = []
    flow = Workflow("approval")

    @flow.step(depends_on=[])
    def submit(input: dict[str, Any]) -> dict[str, Any]:
        calls.append("submit")
        return {"amount": input["amount"]}

    flow.wait_for("approval", signal="approved", depends_on=["submit"], timeout=timeout)

    @flow.step(depends_on=["submit", "approval"])
    def pay(submit: dict[str, Any], approval: dict[str, Any]) -> str:
        calls.append("pay")
        return f"{submit['amount']} paid, approved by {approval['by']}"

    return flow, calls


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def step(app: App, run_id: str, name: str) -> Any:
    return next(s for s in app.get_run(run_id).steps if s.name == name)


def test_a_signal_completes_the_wait_step_with_its_data(make_app: Callable[..., App]) -> None:
    flow, calls = approval_flow()
    app = make_app(flow)
    run = app.start(flow, {"amount": 30})
    with running_worker(app, {"default": 2}):
        wait_until(lambda: step(app, run.id, "submit").status is StepStatus.COMPLETED)
        waiting = step(app, run.id, "approval")
        assert waiting.status is StepStatus.READY
        assert waiting.signal == "approved"
        assert waiting.queued_since is not None
        assert waiting.waiting_for == "signal 'approved' (no timeout)"
        # Waiting holds no slot: the wait step's task stays queued (claimed by no worker).
        time.sleep(0.3)
        (task,) = [t for t in app.engine.run_tasks(run.id) if t.step == "approval"]
        assert task.status is TaskStatus.QUEUED
        assert task.attempt == 0
        assert app.get_run(run.id).status is RunStatus.RUNNING
        assert run.signal("approved", {"by": "ana"}) == "approval"
        assert run.result(timeout=10) == "30 paid, approved by ana"
    info = app.get_run(run.id)
    approval = next(s for s in info.steps if s.name == "approval")
    assert approval.status is StepStatus.COMPLETED
    assert approval.output == {"by": "ana"}
    assert approval.waiting_for is None
    assert calls == ["submit", "pay"]


def test_a_signal_sent_before_the_step_is_reached_is_kept_for_it(
    make_app: Callable[..., App],
) -> None:
    flow, _ = approval_flow()
    app = make_app(flow)
    run = app.start(flow, {"amount": 5})
    # No worker yet: submit has not run, nothing waits; the signal is kept.
    assert app.signal(run.id, "approved", {"by": "early"}) is None
    assert app.get_run(run.id).status is RunStatus.PENDING
    with running_worker(app):
        assert run.result(timeout=10) == "5 paid, approved by early"


def test_each_signal_is_taken_once_oldest_first(make_app: Callable[..., App]) -> None:
    flow = Workflow("two-waits")
    flow.wait_for("first", signal="go", depends_on=[])
    flow.wait_for("second", signal="go", depends_on=["first"])

    @flow.step(depends_on=["first", "second"])
    def both(first: int, second: int) -> list[int]:
        return [first, second]

    app = make_app(flow)
    run = app.start(flow)
    assert app.signal(run.id, "go", 1) == "first"  # the root waits already
    with running_worker(app):
        time.sleep(0.3)
        assert app.get_run(run.id).status is RunStatus.RUNNING  # second still waits
        assert app.signal(run.id, "go", 2) == "second"
        assert run.result(timeout=10) == [1, 2]


def test_signals_to_finished_or_unknown_runs_are_refused(make_app: Callable[..., App]) -> None:
    flow, _ = approval_flow()
    app = make_app(flow)
    run = app.start(flow, {"amount": 1})
    app.cancel(run.id)
    with pytest.raises(RunFinished, match="cancelled"):
        app.signal(run.id, "approved", {"by": "late"})
    with pytest.raises(RunNotFound):
        app.signal("0190a8a2-0000-7000-8000-000000000000", "approved")
    with pytest.raises(RunNotFound):
        app.signal("not-a-uuid", "approved")
    with pytest.raises(InvalidArgument, match="signal name"):
        app.signal(run.id, "bad name!")
    with pytest.raises(SerializationError):
        app.signal(run.id, "approved", {"when": object()})


def test_a_wait_step_times_out_with_signal_timeout_and_its_dependents_never_run(
    make_app: Callable[..., App],
) -> None:
    flow, calls = approval_flow(timeout=timedelta(seconds=0.5))
    app = make_app(flow)
    run = app.start(flow, {"amount": 9})
    with running_worker(app), pytest.raises(WorkflowFailed) as failed:
        run.result(timeout=10)
    assert failed.value.errors[-1].type == "SignalTimeout"
    assert "approved" in failed.value.errors[-1].message
    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    assert step(app, run.id, "approval").status is StepStatus.FAILED
    assert step(app, run.id, "approval").attempts == 1  # not retried
    assert step(app, run.id, "pay").status is StepStatus.CANCELLED
    assert calls == ["submit"]
    with pytest.raises(RunFinished):
        app.signal(run.id, "approved", {"by": "too late"})


def test_a_resumed_run_waits_for_its_signal_again(make_app: Callable[..., App]) -> None:
    flow, calls = approval_flow(timeout=0.4)
    app = make_app(flow)
    run = app.start(flow, {"amount": 2})
    with running_worker(app):
        with pytest.raises(WorkflowFailed):
            run.result(timeout=10)
        assert app.retry(run.id)
        waiting = step(app, run.id, "approval")
        assert waiting.status is StepStatus.READY
        assert waiting.due_at is not None
        assert waiting.waiting_for is not None
        assert "times out at" in waiting.waiting_for
        assert app.signal(run.id, "approved", {"by": "second try"}) == "approval"
        assert run.result(timeout=10) == "2 paid, approved by second try"
    assert calls == ["submit", "pay"]  # submit stayed done


def test_a_cancelled_waiting_run_cancels_its_wait(make_app: Callable[..., App]) -> None:
    flow, _ = approval_flow()
    app = make_app(flow)
    run = app.start(flow, {"amount": 3})
    with running_worker(app):
        wait_until(lambda: step(app, run.id, "approval").status is StepStatus.READY)
        assert app.cancel(run.id)
    assert step(app, run.id, "approval").status is StepStatus.CANCELLED


def test_the_in_process_executor_refuses_signals() -> None:
    flow, _ = approval_flow()
    with pytest.raises(NotSupported, match="signals"):
        execute(flow, {"amount": 1})
