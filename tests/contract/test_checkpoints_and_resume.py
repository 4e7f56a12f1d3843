"""Completed steps are checkpoints: after a later step fails, ``app.retry`` resumes the run from
its failed (and cancelled) steps only, with a fresh attempt budget; completed steps never run
again and their stored outputs are used."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from pypgflow import Backoff, Workflow, WorkflowFailed
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(base=0.01, factor=2, jitter=0)


def test_retry_resumes_a_failed_linear_run_from_its_failed_step(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("checkpointed")
    calls: Counter[str] = Counter()
    healthy = threading.Event()

    @flow.step
    def fetch(input: int) -> int:
        calls["fetch"] += 1
        return input * 2

    @flow.step(max_attempts=2, backoff=FAST)
    def store(fetch: int) -> int:
        calls["store"] += 1
        if not healthy.is_set():
            raise ConnectionError("store is down")
        return fetch + 1

    @flow.step
    def report(store: int) -> str:
        calls["report"] += 1
        return f"stored {store}"

    app = make_app(flow)
    run = app.start(flow, 20)
    with running_worker(app):
        with pytest.raises(WorkflowFailed):
            run.result(timeout=5)
        assert calls == {"fetch": 1, "store": 2}
        steps = {s.name: s.status for s in app.get_run(run.id).steps}
        assert steps == {
            "fetch": StepStatus.COMPLETED,
            "store": StepStatus.FAILED,
            "report": StepStatus.CANCELLED,
        }

        healthy.set()
        assert app.retry(run.id) is True
        assert app.retry(run.id) is False  # already resumed
        assert run.status() in (RunStatus.PENDING, RunStatus.RUNNING)
        assert run.result(timeout=5) == "stored 41"
    assert calls == {"fetch": 1, "store": 3, "report": 1}
    info = app.get_run(run.id)
    assert info.status is RunStatus.COMPLETED
    assert info.error is None
    steps_info = {s.name: s for s in info.steps}
    assert steps_info["store"].attempts == 3
    assert [e.attempt for e in steps_info["store"].errors] == [1, 2]  # history survives
    assert steps_info["fetch"].attempts == 1


def test_retry_of_a_diamond_reruns_only_unfinished_branches(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("diamond-resume")
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    fixed = threading.Event()

    def count(name: str) -> None:
        with lock:
            calls[name] += 1

    @flow.step
    def start(input: int) -> int:
        count("start")
        return input

    @flow.step(depends_on=[start])
    def good(start: int) -> int:
        count("good")
        return start + 1

    @flow.step(depends_on=[start], max_attempts=1)
    async def bad(start: int) -> int:
        count("bad")
        if not fixed.is_set():
            await asyncio.sleep(0.3)  # `good` completes first: it is a checkpoint

            raise ValueError("bad branch")
        return start - 1

    @flow.step(depends_on=[good, bad])
    def join(good: int, bad: int) -> list[int]:
        count("join")
        return [good, bad]

    app = make_app(flow)
    run = app.start(flow, 10)
    with running_worker(app):
        with pytest.raises(WorkflowFailed):
            run.result(timeout=5)
        steps = {s.name: s.status for s in app.get_run(run.id).steps}
        assert steps == {
            "start": StepStatus.COMPLETED,
            "good": StepStatus.COMPLETED,
            "bad": StepStatus.FAILED,
            "join": StepStatus.CANCELLED,
        }
        fixed.set()
        assert app.retry(run.id)
        assert run.result(timeout=5) == [11, 9]
    assert calls == {"start": 1, "good": 1, "bad": 2, "join": 1}


def test_retry_of_a_map_step_reruns_only_failed_elements(make_app: Callable[..., App]) -> None:
    flow = Workflow("map-resume")
    calls: Counter[int] = Counter()
    lock = threading.Lock()
    fixed = threading.Event()

    @flow.map(over=None, max_attempts=1)
    def each(n: int) -> int:
        with lock:
            calls[n] += 1
        if n == 3 and not fixed.is_set():
            time.sleep(0.3)  # the other elements complete first: they are checkpoints
            raise RuntimeError("three")
        return n + 100

    app = make_app(flow)
    run = app.start(flow, [1, 2, 3])
    with running_worker(app):
        with pytest.raises(WorkflowFailed):
            run.result(timeout=5)
        failed = app.get_run(run.id)
        assert failed.error is not None
        assert failed.error.task_index == 2  # the run's error names the element that failed
        fixed.set()
        assert app.retry(run.id)
        assert run.result(timeout=5) == [101, 102, 103]
    assert calls == {1: 1, 2: 1, 3: 2}
    (step,) = app.get_run(run.id).steps
    assert step.status is StepStatus.COMPLETED
    assert step.attempts == 2  # the failed element's first attempt, then the resumed one
    assert [(e.attempt, e.task_index) for e in step.errors] == [(1, 2)]  # the history stays...
    assert step.error is None  # ...the current error goes


def test_retry_of_a_cancelled_run_resumes_it(make_app: Callable[..., App]) -> None:
    flow = Workflow("resume-cancelled")
    calls: Counter[str] = Counter()

    @flow.step
    def first(input: int) -> int:
        calls["first"] += 1
        return input

    @flow.step
    def second(first: int) -> int:
        calls["second"] += 1
        return first + 1

    app = make_app(flow)
    run = app.start(flow, 1)
    assert app.cancel(run.id)
    with pytest.raises(Exception, match="cancelled"):
        run.result(timeout=1)
    assert app.retry(run.id)
    with running_worker(app):
        assert run.result(timeout=5) == 2
    assert calls == {"first": 1, "second": 1}


def test_retry_is_refused_for_runs_that_are_not_failed(make_app: Callable[..., App]) -> None:
    flow = Workflow("fine")
    flow.step(name="ok")(lambda input: input)
    app = make_app(flow)
    run = app.start(flow, 1)
    assert app.retry(run.id) is False  # pending
    with running_worker(app):
        assert run.result(timeout=5) == 1
    assert app.retry(run.id) is False  # completed
    assert run.retry() is False
    assert app.get_run(run.id).status is RunStatus.COMPLETED
