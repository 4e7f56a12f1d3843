"""The templates' failure behaviour in durable runs, through a real worker, on every engine:
llm_request waits a rate limit's Retry-After and fails a refused request at once; webhook
retries, ends a hopeless delivery failed (a dead letter) and re-drives it; a saga undoes its
completed actions in reverse order, each compensation a durable step, and fails naming the
action that failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pypgflow import Backoff, NonRetryable, WorkflowFailed
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from pypgflow.templates import (
    Action,
    dead_letters,
    llm_request_workflow,
    redrive,
    saga_workflow,
    webhook_workflow,
)
from pypgflow.templates.http import Response
from pypgflow.templates.llm_request import FakeModel
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

#: a backoff far longer than any test waits: a step that retries within it waited a Retry-After
SLOW = Backoff(base=30.0, jitter=0.0)
FAST = Backoff(base=0.01, factor=1.0, jitter=0.0)


def test_llm_request_waits_the_rate_limit_then_answers(make_app: Callable[..., App]) -> None:
    flow = llm_request_workflow(FakeModel(retry_after=0.5), backoff=SLOW)
    app = make_app(flow)
    run = app.start(flow, {"prompt": "hello", "simulate": "rate_limit"})
    started = time.monotonic()
    with running_worker(app, poll_interval=0.05):
        out = run.result(timeout=20)
    assert out["completion"] == "[small] hello"
    assert 0.45 <= time.monotonic() - started < 20  # the provider's delay, not 30 s
    step = {s.name: s for s in app.get_run(run.id).steps}["call_model"]
    assert step.attempts == 2
    assert [e.type for e in step.errors] == ["RetryAfter"]
    assert "retry after 0.5 s" in step.errors[0].message


def test_llm_request_fails_a_refused_request_at_once(make_app: Callable[..., App]) -> None:
    flow = llm_request_workflow(backoff=SLOW)
    app = make_app(flow)
    run = app.start(flow, {"prompt": "hello", "simulate": "bad_request"})
    with running_worker(app, poll_interval=0.05), pytest.raises(WorkflowFailed) as failed:
        run.result(timeout=20)
    assert (failed.value.step, failed.value.attempts) == ("call_model", 1)
    assert failed.value.errors[-1].type == "RequestRejected"
    assert app.get_run(run.id).status is RunStatus.FAILED


class Receiver:
    """A webhook receiver that answers 503 until ``up`` is set, then 200."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.attempts: list[str] = []

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response:
        self.attempts.append(headers["Webhook-Attempt"])
        return Response(200 if self.up.is_set() else 503)


def test_webhook_retries_then_delivers(make_app: Callable[..., App]) -> None:
    calls = 0

    def flaky(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
        nonlocal calls
        calls += 1
        return Response(200) if calls == 3 else Response(502)

    flow = webhook_workflow(flaky, backoff=FAST)
    app = make_app(flow)
    run = app.start(flow, {"url": "https://example.com/in", "payload": {"n": 1}})
    with running_worker(app, poll_interval=0.05):
        assert run.result(timeout=20) == {"url": "https://example.com/in", "status": 200,
                                          "attempts": 3}  # fmt: skip
    deliver = {s.name: s for s in app.get_run(run.id).steps}["deliver"]
    assert (deliver.status, deliver.attempts) == (StepStatus.COMPLETED, 3)
    assert [e.type for e in deliver.errors] == ["HTTPStatusError", "HTTPStatusError"]


def test_a_hopeless_webhook_is_a_dead_letter_until_redriven(make_app: Callable[..., App]) -> None:
    receiver = Receiver()
    flow = webhook_workflow(receiver, max_attempts=3, backoff=FAST)
    app = make_app(flow)
    event = {"url": "https://example.com/in", "payload": {"order": 7}}
    run = app.start(flow, event)
    again = app.start(flow, event)  # two deliveries: two dead letters
    with running_worker(app, poll_interval=0.05):
        with pytest.raises(WorkflowFailed) as failed:
            run.result(timeout=20)
        with pytest.raises(WorkflowFailed):
            again.result(timeout=20)
    assert (failed.value.step, failed.value.attempts) == ("deliver", 3)
    assert sorted(receiver.attempts) == ["1", "1", "2", "2", "3", "3"]
    assert {r.id for r in dead_letters(app)} == {run.id, again.id}
    assert dead_letters(app, "other") == []

    receiver.up.set()  # the receiver is back
    assert sorted(redrive(app)) == sorted([run.id, again.id])
    with running_worker(app, poll_interval=0.05):
        assert run.result(timeout=20)["status"] == 200
        assert again.result(timeout=20)["status"] == 200
    assert dead_letters(app) == []
    steps = {s.name: s for s in app.get_run(run.id).steps}
    assert steps["prepare"].attempts == 1  # not run again: the run resumed at deliver
    assert steps["deliver"].attempts == 4


class Ledger:
    """The actions of a booking saga, writing what they do and undo (from worker threads)."""

    def __init__(self, fail_at: str) -> None:
        self.fail_at = fail_at
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)

    def action(self, name: str, *, undo: bool = True) -> Action:
        def act(input: Any, results: dict[str, Any]) -> str:
            self.write(f"do {name}")
            if name == self.fail_at:
                raise NonRetryable(f"{name} is full")
            return f"{name}:{input['trip']}"

        def compensate(input: Any, result: Any) -> str:
            self.write(f"undo {name} {result}")
            return f"released {result}"

        return Action(name, act, compensate if undo else None)


def booking(ledger: Ledger) -> Any:
    return saga_workflow(
        [ledger.action("flight"), ledger.action("hotel"), ledger.action("car"),
         ledger.action("dinner", undo=False)],
        name="booking", backoff=FAST,
    )  # fmt: skip


def test_a_saga_compensates_in_reverse_and_fails_naming_the_action(
    make_app: Callable[..., App],
) -> None:
    ledger = Ledger(fail_at="car")
    flow = booking(ledger)
    app = make_app(flow)
    run = app.start(flow, {"trip": "Lisbon"})
    with running_worker(app, poll_interval=0.05), pytest.raises(WorkflowFailed) as failed:
        run.result(timeout=20)
    assert ledger.lines == [
        "do flight",
        "do hotel",
        "do car",
        "undo hotel hotel:Lisbon",
        "undo flight flight:Lisbon",
    ]
    assert failed.value.step == "finish"
    assert failed.value.errors[-1].type == "SagaFailed"
    assert "saga 'booking' failed at action 'car': NonRetryable: car is full" in str(failed.value)
    info = app.get_run(run.id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert "compensated: hotel, flight" in info.error.message
    states = {s.name: s.status for s in info.steps}
    assert states == {
        "flight": StepStatus.COMPLETED,
        "hotel": StepStatus.COMPLETED,
        "car": StepStatus.COMPLETED,  # its output is the failure
        "dinner": StepStatus.SKIPPED,
        "verdict": StepStatus.COMPLETED,
        "undo_car": StepStatus.SKIPPED,  # the failed action is not undone
        "undo_hotel": StepStatus.COMPLETED,
        "undo_flight": StepStatus.COMPLETED,
        "finish": StepStatus.FAILED,
    }
    outputs = {s.name: s.output for s in info.steps}
    assert outputs["undo_hotel"] == "released hotel:Lisbon"
    assert outputs["car"]["failed"] == {"action": "car", "type": "NonRetryable",
                                        "message": "car is full"}  # fmt: skip


def test_a_saga_that_succeeds_skips_every_compensation(make_app: Callable[..., App]) -> None:
    ledger = Ledger(fail_at="nothing")
    flow = booking(ledger)
    app = make_app(flow)
    run = app.start(flow, {"trip": "Porto"})
    with running_worker(app, poll_interval=0.05):
        out = run.result(timeout=20)
    assert out == {"flight": "flight:Porto", "hotel": "hotel:Porto", "car": "car:Porto",
                   "dinner": "dinner:Porto"}  # fmt: skip
    assert not any(line.startswith("undo") for line in ledger.lines)
    skipped = {s.name for s in app.get_run(run.id).steps if s.status is StepStatus.SKIPPED}
    assert skipped == {"undo_flight", "undo_hotel", "undo_car"}
