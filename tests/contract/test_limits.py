"""Fleet-wide limits: a step's concurrency (per key too), a workflow's (whole runs, gaps
included), a queue's, and rate limits (a sliding window of starts). Steps over a limit wait in
the database, not in a worker slot, with their attempt not counted, and ``get_run`` says what
they wait for. Several workers of one process here; tests/integration/test_limits_processes.py
proves the same with four worker processes."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.admission import gates_for, request_of
from pypgflow.app import App
from pypgflow.errors import ConfigurationError, InvalidArgument, WorkflowDefinitionError
from pypgflow.status import StepStatus
from tests.conftest import running_worker
from tests.limit_checks import most_at_once, most_in_window

pytestmark = pytest.mark.timeout(90)


class Recorder:
    """Every execution's start and end, by key, from the steps' own clock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, float, float]] = []

    def run(self, key: str, seconds: float) -> None:
        began = time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.spans.append((key, began, time.monotonic()))

    def most_at_once(self, key: str | None = None) -> int:
        return most_at_once((b, e) for k, b, e in self.spans if key is None or k == key)


def test_a_step_runs_at_most_its_concurrency_at_once(make_app: Callable[..., App]) -> None:
    recorder = Recorder()
    flow = Workflow("export")

    @flow.step(concurrency=2)
    def export(input: int) -> int:
        recorder.run("all", 0.05)
        return input

    app, other = make_app(flow), make_app(flow)  # two workers, each an instance of its own
    runs = app.start_many(flow, list(range(12)))
    with running_worker(app, {"default": 8}), running_worker(other, {"default": 8}):
        assert [r.result(timeout=30) for r in runs] == list(range(12))
    assert recorder.most_at_once() == 2
    for run in runs:  # a step sent back had its attempt given back
        assert app.get_run(run.id).steps[0].attempts == 1


def test_a_concurrency_key_limits_each_key_alone(make_app: Callable[..., App]) -> None:
    recorder = Recorder()
    flow = Workflow("per-customer")

    @flow.step(concurrency=1, concurrency_key=lambda input: input["customer"])
    def export(input: dict[str, Any]) -> str:
        recorder.run(input["customer"], 0.05)
        return input["customer"]

    app = make_app(flow)
    inputs = [{"customer": c} for c in "abc" * 4]
    runs = app.start_many(flow, inputs)
    with running_worker(app, {"default": 6}):
        for run in runs:
            run.result(timeout=30)
    for customer in "abc":
        assert recorder.most_at_once(customer) == 1
    assert recorder.most_at_once() > 1  # other customers ran beside each other


def test_a_waiting_step_says_it_waits_for_its_limit(make_app: Callable[..., App]) -> None:
    gate = threading.Event()
    flow = Workflow("one-at-a-time")

    @flow.step(concurrency=1)
    def hold(input: int) -> int:
        gate.wait(20)
        return input

    app = make_app(flow)
    first, second = app.start(flow, 1), app.start(flow, 2)
    with running_worker(app, {"default": 4}):
        deadline = time.monotonic() + 15
        while True:
            waiting = [s for r in (first, second) for s in app.get_run(r.id).steps]
            if any(s.waiting_for and "concurrency slot" in s.waiting_for for s in waiting):
                break
            assert time.monotonic() < deadline, waiting
            time.sleep(0.05)
        step = next(s for s in waiting if s.waiting_for)
        assert step.status is StepStatus.READY
        assert step.gate_wait == "step:one-at-a-time:hold"
        assert step.attempts == 0
        gate.set()
        assert first.result(timeout=20) == 1
        assert second.result(timeout=20) == 2  # woken by the first one's end


def test_a_workflow_concurrency_counts_whole_runs_with_their_gaps(
    make_app: Callable[..., App],
) -> None:
    lock = threading.Lock()
    spans: dict[str, list[float]] = {}
    flow = Workflow("nightly", concurrency=1)

    @flow.step
    def begin(input: int, ctx: Any) -> int:
        with lock:
            spans[ctx.run_id] = [time.monotonic()]
        return input

    @flow.step(start_delay=0.2)  # a gap between the steps: the run still holds its slot
    def finish(begin: int, ctx: Any) -> int:
        with lock:
            spans[ctx.run_id].append(time.monotonic())
        return begin

    app = make_app(flow)
    runs = app.start_many(flow, [1, 2, 3])
    with running_worker(app, {"default": 8}):
        for run in runs:
            run.result(timeout=30)
    ordered = sorted(spans.values())
    for earlier, later in itertools.pairwise(ordered):
        assert later[0] >= earlier[1]  # a run began only after the one before it finished


def test_a_queue_limit_holds_across_its_workflows(make_app: Callable[..., App]) -> None:
    recorder = Recorder()
    first, second = Workflow("first"), Workflow("second")
    for flow in (first, second):

        @flow.step(name="work")
        def work(input: int) -> int:
            recorder.run("all", 0.04)
            return input

    app = make_app(first, second)
    app.queue("default", concurrency=2)
    runs = [*app.start_many(first, list(range(5))), *app.start_many(second, list(range(5)))]
    with running_worker(app, {"default": 10}):
        for run in runs:
            run.result(timeout=30)
    assert recorder.most_at_once() == 2


def test_a_rate_limit_is_a_sliding_window_of_starts(make_app: Callable[..., App]) -> None:
    lock = threading.Lock()
    starts: list[float] = []
    flow = Workflow("call-api")

    @flow.map(over=None, rate_limit="api")
    def call(item: int) -> int:
        with lock:
            starts.append(time.monotonic())
        return item

    app = make_app(flow)
    app.rate_limit("api", 4, per=0.5)
    began = time.monotonic()
    run = app.start(flow, list(range(12)))
    with running_worker(app, {"default": 8}):
        assert run.result(timeout=30) == list(range(12))
    assert most_in_window(starts, 0.5) <= 4
    assert time.monotonic() - began >= 1.0  # 12 starts at 4 per half second: two windows wait


def test_limit_options_are_checked(make_app: Callable[..., App]) -> None:
    flow = Workflow("w")
    with pytest.raises(WorkflowDefinitionError, match="concurrency must be an integer"):
        flow.step(name="a", concurrency=0)(lambda input: input)
    with pytest.raises(WorkflowDefinitionError, match="concurrency_key needs concurrency"):
        flow.step(name="b", concurrency_key=lambda i: i)(lambda input: input)
    with pytest.raises(WorkflowDefinitionError, match="concurrency must be"):
        Workflow("x", concurrency=True)  # type: ignore[arg-type]

    @flow.step(rate_limit="undeclared")
    def c(input: int) -> int:
        return input

    app = make_app(flow)
    with pytest.raises(InvalidArgument, match="limit must be an integer"):
        app.rate_limit("api", 0, per=1)
    with pytest.raises(InvalidArgument, match="per must be"):
        app.rate_limit("api", 1, per=0)
    with pytest.raises(InvalidArgument, match="concurrency must be"):
        app.queue("default", concurrency=-1)
    with pytest.raises(ConfigurationError, match="'undeclared'"):
        app.run_worker()


def test_retention_drops_the_holders_of_pruned_runs_and_old_rate_tokens(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("kept-small")

    @flow.step(concurrency=1, concurrency_key=lambda input: input, rate_limit="api")
    def work(input: int) -> int:
        return input

    app = make_app(flow)
    app.rate_limit("api", 100, per=0.2)
    runs = app.start_many(flow, [1, 2, 3])  # three keys, each admitted once
    with running_worker(app):
        for run in runs:
            run.result(timeout=20)
    engine = app.engine
    time.sleep(0.5)  # the tokens are older than the window and its margin
    assert engine.prune_rate_tokens({"api": 0.25}) == 3
    assert engine.prune_rate_tokens({"api": 0.25}) == 0
    deleted, _ = engine.prune_runs(completed_before=0, failed_before=0, batch=100)
    assert deleted == 3
    # no admission reads these keys again: the pruned runs' holders went with them
    with engine._write() as conn:  # the table, as the next admission of a key would read it
        keys = [f"step:kept-small:work:{n}" for n in (1, 2, 3)]
        assert engine._fetch(conn, "gate_holders", {"keys": engine._ids(keys)}) == []


def test_a_task_handed_back_holds_its_gate_no_more(make_app: Callable[..., App]) -> None:
    """A step admitted and then handed back (a worker stopping) is claimed again with the same
    attempt number: its old holder must not count, or a gate of one would send it back forever."""
    flow = Workflow("handed_back")

    @flow.step(concurrency=1)
    def export(input: int) -> int:
        return input

    app = make_app(flow)
    run = app.start(flow, 7)
    engine = app.engine

    def claim_and_admit() -> set[int]:
        (task,) = engine.claim_tasks("default", 1, instance_id="t", workflows=[flow.name])
        gated = task.gated(gates_for(task, flow, queue_limits={}, rate_limits={}))
        return engine.admit([request_of(gated)]).admitted

    (task_id,) = claim_and_admit()
    assert engine.release_tasks([task_id], instance_id="t") == 1
    assert claim_and_admit() == {task_id}  # admitted again, not sent back
    assert engine.release_tasks([task_id], instance_id="t") == 1
    with running_worker(app):
        assert run.result(timeout=30) == 7


def test_an_admission_wakes_waiters_into_room_nobody_takes(make_app: Callable[..., App]) -> None:
    """A holder's end wakes one waiter, but a wake can be spent (a worker let a task of its own
    in first; a holder handed back wakes nobody). An admission that leaves its gate with room
    makes as many waiters due at once, rather than after GATE_RECHECK."""
    flow = Workflow("room_left")

    @flow.step(concurrency=2)
    def export(input: int) -> int:
        return input

    app = make_app(flow)
    app.start_many(flow, [1, 2, 3, 4])
    engine = app.engine

    def claim(n: int) -> list[Any]:
        return engine.claim_tasks("default", n, instance_id="t", workflows=[flow.name])

    def admit(tasks: list[Any]) -> Any:
        gated = [t.gated(gates_for(t, flow, queue_limits={}, rate_limits={})) for t in tasks]
        return engine.admit([request_of(t) for t in gated])

    first = admit(claim(4))
    assert len(first.admitted) == 2
    waiting = sorted(first.deferred)
    assert len(waiting) == 2
    handed_back = sorted(first.admitted)
    assert engine.release_tasks(handed_back, instance_id="t") == 2  # the gate is empty now
    (again,) = claim(1)
    assert again.id == handed_back[0]
    assert admit([again]).admitted == {again.id}  # room for one more: the first waiter is due
    assert sorted(t.id for t in claim(4)) == sorted([handed_back[1], waiting[0]])
