"""@app.job: a plain background job is a one-step workflow on its own queue; ``enqueue`` starts it
durably and returns the run, calling it runs the function here and now."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Backoff, Workflow, WorkflowFailed
from pypgflow.app import App, Job
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def test_enqueue_runs_the_job_on_its_queue(make_app: Callable[..., App]) -> None:
    app = make_app()
    sent: list[dict[str, str]] = []
    attempts: list[int] = []
    lock = threading.Lock()

    @app.job(queue="mail", max_attempts=5, backoff=Backoff(base=0.01, factor=2, jitter=0))
    def send_email(args: dict[str, str], ctx) -> str:  # type: ignore[no-untyped-def]
        with lock:
            attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            raise ConnectionError("smtp down")
        sent.append(args)
        return f"sent to {args['to']}"

    assert isinstance(send_email, Job)
    assert send_email.__name__ == "send_email"
    assert "send_email" in app.workflows

    run = send_email.enqueue({"to": "a@b.c"})
    info = app.get_run(run.id)
    assert info.queue == "mail"
    assert info.workflow == "send_email"
    # A worker on other queues leaves it alone...
    with running_worker(app, ["default"]), pytest.raises(TimeoutError):
        run.result(timeout=0.4)
    # ...a worker on its queue runs it, retries included.
    with running_worker(app, {"mail": 2}):
        assert run.result(timeout=5) == "sent to a@b.c"
    assert sent == [{"to": "a@b.c"}]
    assert attempts == [1, 2]


def test_job_options_and_direct_call(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job
    def add(args: list[int]) -> int:
        return sum(args)

    assert add([1, 2, 3]) == 6  # a plain call, nothing stored
    assert app.list_runs() == []
    urgent = add.enqueue([1, 1], priority=0, queue="fast", idempotency_key="sum-1")
    assert add.enqueue([1, 1], idempotency_key="sum-1").id == urgent.id
    assert app.get_run(urgent.id).queue == "fast"
    with running_worker(app, ["fast"]):
        assert urgent.result(timeout=5) == 2


def test_job_failing_for_good(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(max_attempts=2, backoff=Backoff(base=0.01, factor=2, jitter=0), name="always-fails")
    def failing(args: Any) -> None:
        raise RuntimeError(f"cannot handle {args}")

    run = failing.enqueue("x")
    with running_worker(app), pytest.raises(WorkflowFailed) as caught:
        run.result(timeout=5)
    assert caught.value.workflow == "always-fails"
    assert caught.value.step == "failing"
    assert caught.value.attempts == 2
    assert app.get_run(run.id).status is RunStatus.FAILED
    assert [r.id for r in app.list_runs(workflow=failing)] == [run.id]
    assert [r.id for r in app.list_runs(workflow="always-fails", status="failed")] == [run.id]


def test_enqueue_async_and_async_job(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="io")
    async def fetch(args: str) -> str:
        await asyncio.sleep(0)
        return args.upper()

    async def scenario() -> str:
        run = await fetch.enqueue_async("hello")
        return run.id

    run_id = asyncio.run(scenario())
    with running_worker(app, ["io"]):
        assert app.run(run_id).result(timeout=5) == "HELLO"


def test_jobs_and_workflows_share_an_app(make_app: Callable[..., App]) -> None:
    flow = Workflow("plain")
    flow.step(name="one")(lambda input: input + 1)
    app = make_app(flow)

    @app.job
    def double(args: int) -> int:
        return args * 2

    runs = [app.start(flow, 1), double.enqueue(4)]
    with running_worker(app):
        assert [r.result(timeout=5) for r in runs] == [2, 8]
