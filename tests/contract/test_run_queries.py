"""Reading runs back: get_run with its steps, list_runs with its filters, and clear errors for
unknown runs and bad filters; and the instances registry that ``app.instances()`` reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from pypgflow import Backoff, InvalidArgument, RunNotFound, UnknownWorkflow, Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def flows() -> tuple[Workflow, Workflow]:
    ok = Workflow("ok")
    ok.step(name="echo")(lambda input: input)
    bad = Workflow("bad", max_attempts=1, backoff=Backoff(base=0.01, factor=2, jitter=0))

    @bad.step
    def explode(input: object) -> None:
        raise RuntimeError("nope")

    return ok, bad


def test_get_run_describes_a_pending_run(make_app: Callable[..., App]) -> None:
    ok, _ = flows()
    app = make_app(ok)
    run = app.start(ok, {"a": [1, 2]}, queue="q1", priority=4)
    info = app.get_run(run.id)
    assert info.id == run.id
    assert info.workflow == "ok"
    assert info.status is RunStatus.PENDING
    assert info.input == {"a": [1, 2]}
    assert info.output is None
    assert info.error is None
    assert info.started_at is None
    assert info.finished_at is None
    assert info.duration is None
    assert (info.queue, info.priority, info.idempotency_key) == ("q1", 4, None)
    (step,) = info.steps
    assert step.name == "echo"
    assert step.status is StepStatus.READY
    assert step.attempts == 0
    assert step.output is None
    assert step.error is None
    assert step.errors == ()
    assert step.instance_id is None
    assert step.finished_at is None
    assert app.run(run.id) == run
    assert run.info() == info


def test_get_run_takes_any_spelling_of_the_id_and_shows_waiting_steps(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("pair")
    flow.step(name="first")(lambda input: input)
    flow.step(name="second")(lambda first: first)
    app = make_app(flow)
    run = app.start(flow, 1)
    info = app.get_run(run.id.upper())
    assert info.id == run.id
    assert [(s.name, s.status) for s in info.steps] == [
        ("first", StepStatus.READY),
        ("second", StepStatus.WAITING),  # until its dependency completes
    ]
    assert app.run(run.id.upper()).status() is RunStatus.PENDING
    result = app.engine.run_result(run.id)
    assert result is not None
    assert (result.status, result.output, result.error) == (RunStatus.PENDING, None, None)
    assert app.engine.run_result("nope") is None
    assert app.engine.run_result("00000000-0000-0000-0000-000000000000") is None


def test_get_run_of_unknown_ids_raises_run_not_found(make_app: Callable[..., App]) -> None:
    app = make_app()
    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", ""):
        with pytest.raises(RunNotFound, match="no run with id"):
            app.get_run(bad)
        with pytest.raises(RunNotFound):
            app.run(bad)
    from pypgflow.app import Run

    ghost = Run(app, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(RunNotFound):
        ghost.status()
    with pytest.raises(RunNotFound):
        ghost.result(timeout=1)
    with pytest.raises(RunNotFound):
        app.retry(ghost.id)
    with pytest.raises(RunNotFound):
        asyncio.run(app.get_run_async(ghost.id))
    with pytest.raises(LookupError):  # RunNotFound is a LookupError
        app.get_run(ghost.id)


def test_list_runs_filters_by_status_and_workflow(make_app: Callable[..., App]) -> None:
    ok, bad = flows()
    app = make_app(ok, bad)
    done = [app.start(ok, i) for i in range(3)]
    failed = app.start(bad, None)
    with running_worker(app):
        for run in done:
            run.result(timeout=5)
        with pytest.raises(Exception, match="nope"):
            failed.result(timeout=5)
    pending = app.start(ok, "later")
    cancelled = app.start(bad, None)
    app.cancel(cancelled.id)

    def ids(runs: list) -> set[str]:  # type: ignore[type-arg]
        return {r.id for r in runs}

    assert ids(app.list_runs()) == {r.id for r in [*done, failed, pending, cancelled]}
    assert ids(app.list_runs(status=RunStatus.FAILED)) == {failed.id}
    assert ids(app.list_runs(status="failed")) == {failed.id}
    assert ids(app.list_runs(status="completed")) == {r.id for r in done}
    assert ids(app.list_runs(status=RunStatus.PENDING)) == {pending.id}
    assert ids(app.list_runs(status="cancelled")) == {cancelled.id}
    assert app.list_runs(status="running") == []
    assert ids(app.list_runs(workflow="bad")) == {failed.id, cancelled.id}
    assert ids(app.list_runs(workflow=bad)) == {failed.id, cancelled.id}
    assert ids(app.list_runs(status="completed", workflow="bad")) == set()
    assert ids(app.list_runs(status="cancelled", workflow=bad)) == {cancelled.id}
    assert app.list_runs(workflow="no-such-workflow") == []

    listed = app.list_runs()
    assert listed[0].id == cancelled.id  # newest first
    assert [r.created_at for r in listed] == sorted((r.created_at for r in listed), reverse=True)
    assert all(r.steps == () for r in listed)  # list_runs leaves steps out
    assert len(app.list_runs(limit=2)) == 2
    assert ids(asyncio.run(app.list_runs_async(status="failed"))) == {failed.id}
    failed_info = app.list_runs(status="failed")[0]
    assert failed_info.error is not None
    assert failed_info.error.message == "nope"


def test_list_runs_rejects_bad_filters(make_app: Callable[..., App]) -> None:
    app = make_app()
    with pytest.raises(InvalidArgument, match=r"unknown run status 'finished' \(one of pending"):
        app.list_runs(status="finished")
    with pytest.raises(InvalidArgument, match="unknown run status"):
        app.list_runs(status="FAILED")
    for limit in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgument, match="limit"):
            app.list_runs(limit=limit)  # type: ignore[arg-type]


def test_start_checks_the_workflow_is_registered(make_app: Callable[..., App]) -> None:
    ok, bad = flows()
    app = make_app(ok)
    with pytest.raises(UnknownWorkflow, match=r"no workflow named 'bad'.*registered: ok"):
        app.start("bad", None)
    assert app.list_runs() == []
    # Passing the Workflow object itself needs no registration (a worker will still need it).
    run = app.start(bad, None)
    assert app.get_run(run.id).workflow == "bad"


def test_instances_show_what_workers_registered_and_when_they_were_last_seen(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    engine = app.engine
    engine.register_instance("w1", hostname="box", pid=42, queues={"default": 3})
    engine.heartbeat_instance("w1", load=2)
    (instance,) = app.instances()
    assert (instance.instance_id, instance.hostname, instance.pid) == ("w1", "box", 42)
    assert instance.queues == {"default": 3}
    assert instance.load == 2
    assert instance.status == "online"
    for moment in (instance.heartbeat_at, instance.started_at):
        assert moment is not None
        assert moment.tzinfo is not None
        assert abs((datetime.now(UTC) - moment).total_seconds()) < 30
    time.sleep(0.05)
    assert app.instances(stale_after=0.01)[0].status == "offline"
    assert app.instances()[0].status == "online"
    engine.deregister_instance("w1")
    assert app.instances() == []
