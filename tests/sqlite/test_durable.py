"""Durable runs on a SQLite file, end to end with a worker: the same behaviour and the same
records as on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pypgflow import Backoff, StepContext, Workflow, WorkflowFailed, orchestration
from pypgflow.app import App
from pypgflow.engines.base import StartRequest
from pypgflow.engines.sqlfile import migration_files
from pypgflow.engines.sqlite import SqliteEngine
from pypgflow.errors import NotSupported, RunCancelled, RunNotFound
from pypgflow.status import RunStatus, StepStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

FAST = Backoff(base=0.01, factor=2, jitter=0)

hello = Workflow("hello")


@hello.step
def greet(input: dict[str, str]) -> dict[str, str]:
    return {**input, "greeting": f"Hello, {input['name']}"}


@hello.step
def shout(state: dict[str, str]) -> dict[str, str]:
    return {**state, "greeting": state["greeting"].upper()}


def request_for(flow: Workflow, input: Any, *, queue: str = "default") -> StartRequest:
    """What App.start hands the engine."""
    changes = orchestration.Changes()
    run = orchestration.new_run(
        flow,
        run_id=str(uuid.uuid4()),
        input_json=json.dumps(input),
        queue=queue,
        priority=0,
        changes=changes,
    )
    return StartRequest(run=run, changes=changes)


def near_now(moment: datetime | None) -> bool:
    assert moment is not None
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)
    return abs((datetime.now(UTC) - moment).total_seconds()) < 30


def test_hello_runs_durably_and_is_stored_step_by_step(make_app: Callable[..., App]) -> None:
    app = make_app(hello)
    run = app.start("hello", {"name": "World"})
    assert run.status() is RunStatus.PENDING
    with running_worker(app):
        assert run.result(timeout=10) == {"name": "World", "greeting": "HELLO, WORLD"}
    info = app.get_run(run.id)
    assert info.status is RunStatus.COMPLETED
    assert info.input == {"name": "World"}
    assert info.output == {"name": "World", "greeting": "HELLO, WORLD"}
    assert info.error is None
    assert [s.name for s in info.steps] == ["greet", "shout"]
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in info.steps)
    assert info.steps[0].output == {"name": "World", "greeting": "Hello, World"}
    assert info.steps[1].depends_on == ("greet",)
    assert all(s.instance_id == app.instance_id for s in info.steps)
    for moment in (info.created_at, info.scheduled_at, info.started_at, info.finished_at):
        assert near_now(moment)
    assert info.created_at <= info.started_at <= info.finished_at  # type: ignore[operator]
    greet_info, shout_info = info.steps
    assert greet_info.finished_at is not None
    assert shout_info.started_at is not None
    assert greet_info.finished_at <= shout_info.started_at
    assert [r.id for r in app.list_runs()] == [run.id]
    result = app.engine.run_result(run.id)
    assert result is not None
    assert result.output == info.output


def test_a_dag_with_map_steps(make_app: Callable[..., App]) -> None:
    flow = Workflow("fan")

    @flow.step
    def split(input: str) -> list[str]:
        return input.split()

    @flow.map(over=split)
    async def measure(word: str) -> int:
        await asyncio.sleep(0.002 * (6 - len(word)))  # later elements finish first
        return len(word)

    @flow.step(depends_on=[split])
    def upper(split: list[str]) -> list[str]:
        return [w.upper() for w in split]

    @flow.step(depends_on=[measure, upper])
    def report(measure: list[int], upper: list[str]) -> dict[str, Any]:
        return {"lengths": measure, "upper": upper}

    squares = Workflow("squares")

    @squares.map(over=None)
    def square(item: int) -> int:  # a root map step, over the workflow input
        return item * item

    app = make_app(flow, squares)
    runs = app.start_many(flow, ["a bb ccc dddd", "", "solo"])
    mapped = app.start(squares, [1, 2, 3])
    with running_worker(app):
        results = [r.result(timeout=10) for r in runs]
        assert mapped.result(timeout=10) == [1, 4, 9]
    assert results == [
        {"lengths": [1, 2, 3, 4], "upper": ["A", "BB", "CCC", "DDDD"]},
        {"lengths": [], "upper": []},
        {"lengths": [4], "upper": ["SOLO"]},
    ]
    steps = {s.name: s for s in app.get_run(runs[0].id).steps}
    assert steps["measure"].is_map
    assert steps["measure"].task_count == 4
    assert steps["measure"].output == [1, 2, 3, 4]
    assert steps["measure"].depends_on == ("split",)
    assert steps["report"].depends_on == ("measure", "upper")
    assert all(s.status is StepStatus.COMPLETED and s.attempts == 1 for s in steps.values())
    empty = {s.name: s for s in app.get_run(runs[1].id).steps}
    assert empty["measure"].task_count == 0
    assert empty["measure"].attempts == 0
    assert empty["measure"].status is StepStatus.COMPLETED
    assert empty["measure"].output == []
    (square_info,) = app.get_run(mapped.id).steps
    assert square_info.is_map
    assert square_info.task_count == 3
    assert square_info.output == [1, 4, 9]


def test_a_map_over_something_else_than_a_list_fails_the_run(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("not-a-list")

    @flow.step
    def give(input: int) -> dict[str, int]:
        return {"n": input}

    @flow.map(over=give)
    def each(item: Any) -> Any:  # pragma: no cover - never runs
        return item

    app = make_app(flow)
    run = app.start(flow, 1)
    with running_worker(app), pytest.raises(WorkflowFailed, match="needs a list"):
        run.result(timeout=10)
    info = app.get_run(run.id)
    assert info.error is not None
    assert info.error.type == "MapInputError"
    assert {s.name: s.status for s in info.steps} == {
        "give": StepStatus.COMPLETED,
        "each": StepStatus.FAILED,
    }


def test_retries_with_backoff_keep_every_error(make_app: Callable[..., App]) -> None:
    flow = Workflow("flaky")
    attempts: list[int] = []

    @flow.step(max_attempts=4, backoff=FAST)
    def wobble(input: int, ctx: StepContext) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError(f"not yet ({ctx.attempt})")
        return input + 1

    doomed = Workflow("doomed")

    @doomed.step(max_attempts=2, backoff=FAST)
    def crash(input: int) -> int:
        raise KeyError(f"missing {input}")

    @doomed.step
    def never(crash: int) -> int:  # pragma: no cover - never runs
        return crash

    app = make_app(flow, doomed)
    run = app.start(flow, 1)
    bad = app.start(doomed, 7)
    with running_worker(app):
        assert run.result(timeout=10) == 2
        with pytest.raises(WorkflowFailed) as failure:
            bad.result(timeout=10)
    assert attempts == [1, 2, 3]
    (step,) = app.get_run(run.id).steps
    assert step.status is StepStatus.COMPLETED
    assert step.attempts == 3
    assert step.error is None
    assert [(e.attempt, e.type, e.message) for e in step.errors] == [
        (1, "ValueError", "not yet (1)"),
        (2, "ValueError", "not yet (2)"),
    ]
    assert all(e.instance_id == app.instance_id and "Traceback" in e.traceback for e in step.errors)
    assert failure.value.step == "crash"
    assert failure.value.attempts == 2
    assert [e.attempt for e in failure.value.errors] == [1, 2]
    info = app.get_run(bad.id)
    assert info.status is RunStatus.FAILED
    assert info.error is not None
    assert info.error.type == "KeyError"
    crash_info, never_info = info.steps
    assert crash_info.status is StepStatus.FAILED
    assert crash_info.error is not None
    assert crash_info.error.attempt == 2
    assert never_info.status is StepStatus.CANCELLED
    assert never_info.attempts == 0


def test_the_backoff_is_scheduled_in_the_database(make_app: Callable[..., App]) -> None:
    from pypgflow.engines.base import Failed
    from pypgflow.errors import AttemptError

    flow = Workflow("scheduled")

    @flow.step(max_attempts=2)
    def only(input: int) -> int:
        return input

    app = make_app(flow)
    engine = app.engine
    app.start(flow, 1)
    (task,) = engine.claim_tasks("default", 5, instance_id="me", workflows=["scheduled"])
    assert (task.attempt, task.max_attempts, task.run_input) == (1, 2, 1)
    result = engine.finish_tasks(
        [Failed(task, AttemptError("only", 1, "X", "", ""), orchestration.Retry(0.3))]
    )
    assert result.accepted == 1
    assert engine.claim_tasks("default", 5, instance_id="me", workflows=["scheduled"]) == []
    due = engine.next_due_in(["default"], ["scheduled"])
    assert due is not None
    assert 0.1 < due <= 0.3
    time.sleep(due + 0.02)
    (again,) = engine.claim_tasks("default", 5, instance_id="me", workflows=["scheduled"])
    assert again.id == task.id
    assert again.attempt == 2


def test_cancellation(make_app: Callable[..., App]) -> None:
    flow = Workflow("slow")
    started = threading.Event()
    saw_cancel = threading.Event()

    @flow.step
    def nap(input: None, ctx: StepContext) -> str:
        started.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ctx.cancelled:
                saw_cancel.set()
                return "stopped"
            time.sleep(0.01)
        return "slept"  # pragma: no cover - cancelled first

    @flow.step
    def after(nap: str) -> str:  # pragma: no cover - cancelled
        return nap

    app = make_app(flow)
    pending = app.start(flow, None)
    assert app.cancel(pending.id) is True  # before any worker: nothing ever runs
    assert app.cancel(pending.id) is False
    run = app.start(flow, None)
    with running_worker(app, cancel_check_interval=0.05):
        assert started.wait(5)
        assert run.status() is RunStatus.RUNNING
        assert run.cancel() is True
        with pytest.raises(RunCancelled):
            run.result(timeout=5)
        assert saw_cancel.wait(5)
    with pytest.raises(RunCancelled):
        pending.result(timeout=1)
    info = app.get_run(run.id)
    assert info.status is RunStatus.CANCELLED
    assert info.finished_at is not None
    assert [s.status for s in info.steps] == [StepStatus.CANCELLED, StepStatus.CANCELLED]
    assert info.steps[0].attempts == 1
    assert [s.status for s in app.get_run(pending.id).steps] == [
        StepStatus.CANCELLED,
        StepStatus.CANCELLED,
    ]
    with pytest.raises(RunNotFound):
        app.cancel("7f0c5a84-0000-4000-8000-000000000000")
    with pytest.raises(RunNotFound):
        app.cancel("not-a-uuid")


def test_resume_of_a_failed_run_reruns_only_unfinished_steps(
    make_app: Callable[..., App],
) -> None:
    flow = Workflow("checkpointed")
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    healthy = threading.Event()

    def count(name: str) -> None:
        with lock:
            calls[name] += 1

    @flow.step
    def fetch(input: int) -> list[int]:
        count("fetch")
        return [input, input + 1, input + 2]

    @flow.map(over=fetch, max_attempts=2, backoff=FAST)
    def store(item: int) -> int:
        count(f"store {item}")
        if item == 21 and not healthy.is_set():
            raise ConnectionError("store is down")
        return item * 10

    @flow.step
    def report(store: list[int]) -> str:
        count("report")
        return f"stored {store}"

    app = make_app(flow)
    run = app.start(flow, 20)
    with running_worker(app):
        with pytest.raises(WorkflowFailed, match="store is down"):
            run.result(timeout=10)
        failed = app.get_run(run.id)
        assert failed.status is RunStatus.FAILED
        assert failed.error is not None
        assert failed.error.task_index == 1
        assert {s.name: s.status for s in failed.steps} == {
            "fetch": StepStatus.COMPLETED,
            "store": StepStatus.FAILED,
            "report": StepStatus.CANCELLED,
        }
        healthy.set()
        assert app.retry(run.id) is True
        assert app.retry(run.id) is False  # already pending again
        assert run.result(timeout=10) == "stored [200, 210, 220]"
    assert calls["fetch"] == 1
    assert calls["report"] == 1
    assert calls["store 21"] == 3  # two failed attempts, then one after the resume
    info = app.get_run(run.id)
    assert info.status is RunStatus.COMPLETED
    assert info.error is None
    store_info = {s.name: s for s in info.steps}["store"]
    assert store_info.attempts == 3
    assert [(e.attempt, e.task_index) for e in store_info.errors] == [(1, 1), (2, 1)]
    assert store_info.error is None  # completed: the history stays, the current error goes


def test_idempotency_keys(make_app: Callable[..., App], db_path: str) -> None:
    app = make_app(hello)
    first = app.start(hello, {"name": "a"}, idempotency_key="order-1")
    again = app.start(hello, {"name": "b"}, idempotency_key="order-1")
    other = app.start(hello, {"name": "c"}, idempotency_key="order-2")
    assert again.id == first.id
    assert other.id != first.id
    assert app.get_run(first.id).input == {"name": "a"}
    assert app.get_run(first.id).idempotency_key == "order-1"
    assert len(app.list_runs()) == 2

    # Concurrent starts with one key, from separate engines (separate connections): one run.
    apps = [make_app(hello) for _ in range(4)]
    barrier = threading.Barrier(len(apps))
    ids: list[str] = []

    def start(each: App) -> None:
        barrier.wait()
        ids.append(each.start(hello, {"name": "x"}, idempotency_key="shared").id)

    threads = [threading.Thread(target=start, args=(each,)) for each in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(ids) == 4
    assert len(set(ids)) == 1
    with running_worker(app):
        assert app.run(ids[0]).result(timeout=10) == {"name": "x", "greeting": "HELLO, X"}
        assert first.result(timeout=10) == {"name": "a", "greeting": "HELLO, A"}
    assert len(app.list_runs()) == 3


def test_delays_and_priorities(make_app: Callable[..., App]) -> None:
    app = make_app(hello)
    engine = app.engine
    order = [(5, "five"), (0, "zero-a"), (9, "nine"), (0, "zero-b"), (3, "three")]
    runs = {name: app.start(hello, {"name": name}, priority=p).id for p, name in order}
    later = app.start(hello, {"name": "later"}, delay=0.8)
    at = app.start(hello, {"name": "at"}, run_at=datetime.now(UTC) + timedelta(seconds=0.8))
    info = app.get_run(later.id)
    assert info.scheduled_at is not None
    assert 0.75 < (info.scheduled_at - info.created_at).total_seconds() < 0.85
    # Best first: priority, then due time, then age; the delayed runs are not due yet.
    claim = engine.claim_tasks
    best = claim("default", 2, instance_id="me", workflows=["hello"])
    assert [t.run_input["name"] for t in best] == ["zero-a", "zero-b"]
    (then,) = claim("default", 1, instance_id="me", workflows=["hello"])
    assert then.run_input["name"] == "three"
    rest = claim("default", 10, instance_id="me", workflows=["hello"])
    assert [t.run_input["name"] for t in rest] == ["five", "nine"]
    assert all(t.run_id == runs[t.run_input["name"]] for t in [*best, then, *rest])
    assert claim("default", 10, instance_id="me", workflows=["hello"]) == []
    due = engine.next_due_in(["default"], ["hello"])
    assert due is not None
    assert 0.1 < due <= 0.8
    # Handed back (a graceful shutdown): queued again, the attempt not counted.
    ids = [t.id for t in [*best, then, *rest]]
    assert engine.still_running(ids) == set(ids)
    assert engine.release_tasks(ids, instance_id="someone else") == 0
    assert engine.release_tasks(ids, instance_id="me") == 5
    assert engine.still_running(ids) == set()
    seen: list[str] = []
    ordered = Workflow("ordered")

    @ordered.step
    def note(input: str) -> str:
        seen.append(input)
        return input

    app2 = make_app(ordered)
    for priority, name in order:
        app2.start(ordered, name, priority=priority)
    app2.start(ordered, "delayed", delay=0.3, priority=9)  # due or not, after "nine"
    with running_worker(app2, {"default": 1}):
        deadline = time.monotonic() + 10
        while len(seen) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert seen == ["zero-a", "zero-b", "three", "five", "nine", "delayed"]
    with running_worker(app):
        assert later.result(timeout=10)["greeting"] == "HELLO, LATER"
        assert at.result(timeout=10)["greeting"] == "HELLO, AT"
    started = app.get_run(later.id).started_at
    assert started is not None
    assert info.scheduled_at <= started


def test_starting_inside_a_callers_transaction_is_not_supported(
    make_app: Callable[..., App],
) -> None:
    app = make_app(hello)
    with pytest.raises(NotSupported, match="needs PostgreSQL"):
        app.start(hello, {"name": "x"}, connection=object())
    with pytest.raises(NotSupported):
        app.start_many(hello, [{"name": "x"}], connection=object())
    with pytest.raises(NotSupported):
        asyncio.run(app.start_async(hello, {"name": "x"}, connection=object()))
    request = request_for(hello, {"name": "x"})
    with pytest.raises(NotSupported, match="needs PostgreSQL"):
        app.engine.start_runs([request], connection=object())
    with pytest.raises(NotSupported):
        asyncio.run(app.engine.start_runs_async([request], connection=object()))
    assert app.list_runs() == []


def test_an_in_memory_database_works_within_one_process() -> None:
    engine = SqliteEngine("sqlite://:memory:")
    app = App(engine=engine, workflows=[hello])
    try:
        with pytest.raises(Exception, match="pypgflow migrate"):
            app.start(hello, {"name": "x"})
        assert app.migrate() == [
            v for v, _, _ in migration_files("pypgflow.engines.sqlite.migrations")
        ]
        runs = app.start_many(hello, [{"name": str(i)} for i in range(50)])
        with running_worker(app, poll_interval=5):
            assert [r.result(timeout=10)["greeting"] for r in runs] == [
                f"HELLO, {i}" for i in range(50)
            ]
            # Woken directly by the start, not by the 5 s poll.
            quick = app.start(hello, {"name": "quick"})
            assert quick.result(timeout=2)["greeting"] == "HELLO, QUICK"
        assert app.get_run(quick.id).status is RunStatus.COMPLETED
        other = SqliteEngine("sqlite://:memory:")  # a separate database
        with pytest.raises(Exception, match="pypgflow migrate"):
            other.check_schema()
        other.close()
    finally:
        app.close()


def test_queries_and_instances(make_app: Callable[..., App]) -> None:
    app = make_app(hello)
    engine = app.engine
    first = app.start(hello, {"name": "a"}, queue="emails", priority=4)
    second = app.start(hello, {"name": "b"})
    assert [r.id for r in app.list_runs()] == [second.id, first.id]  # newest first
    assert [r.id for r in app.list_runs(limit=1)] == [second.id]
    assert [r.id for r in app.list_runs(status="pending", workflow="hello")] == [
        second.id,
        first.id,
    ]
    assert app.list_runs(status="completed") == []
    assert app.list_runs(workflow="other") == []
    info = app.get_run(first.id.upper())  # any spelling of the UUID
    assert (info.id, info.queue, info.priority) == (first.id, "emails", 4)
    assert info.steps[0].status is StepStatus.READY
    assert info.steps[1].status is StepStatus.WAITING
    with pytest.raises(RunNotFound):
        app.get_run("0c0c0c0c-0000-4000-8000-000000000000")
    with pytest.raises(RunNotFound):
        app.get_run("nope")
    assert engine.run_result("nope") is None
    assert engine.unknown_workflows_waiting(["emails", "default"], ["other"]) == ["hello"]
    assert engine.unknown_workflows_waiting(["emails"], ["hello"]) == []

    engine.register_instance("w1", hostname="box", pid=42, queues={"default": 3})
    engine.heartbeat_instance("w1", load=2)
    (instance,) = app.instances()
    assert (instance.instance_id, instance.hostname, instance.pid) == ("w1", "box", 42)
    assert instance.queues == {"default": 3}
    assert instance.load == 2
    assert instance.status == "online"
    assert near_now(instance.heartbeat_at)
    assert near_now(instance.started_at)
    time.sleep(0.05)
    assert app.instances(stale_after=0.01)[0].status == "offline"
    engine.deregister_instance("w1")
    assert app.instances() == []


def test_exactly_once_under_concurrent_claims(tmp_path: Any) -> None:
    """Threads of two engines (separate connections, as separate processes would have) claim
    from one queue at once: every task is claimed once."""
    from pypgflow.engines.base import Completed

    path = str(tmp_path / "claims.db")
    engines = [SqliteEngine(path), SqliteEngine(path)]
    engines[0].migrate()
    app = App(engine=engines[0], workflows=[hello])
    app.start_many(hello, [{"name": str(i)} for i in range(400)])
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claim(engine: SqliteEngine, worker: int) -> None:
        try:
            while True:
                tasks = engine.claim_tasks(
                    "default", 7, instance_id=f"t{worker}", workflows=["hello"]
                )
                if not tasks:
                    return
                with lock:
                    claimed.extend(t.id for t in tasks)
                engine.finish_tasks([Completed(t, '{"name":"x","greeting":"y"}') for t in tasks])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(engines[i % 2], i)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(claimed) == len(set(claimed)) == 800  # two steps per run, each claimed once
    assert all(r.status is RunStatus.COMPLETED for r in app.list_runs(limit=1000))
    for engine in engines:
        engine.close()


def test_listeners_hear_of_new_work(db_path: str) -> None:
    engine = SqliteEngine(db_path)
    other = SqliteEngine(db_path)  # another connection, as another process would have
    app = App(engine=other, workflows=[hello])
    heard: list[str] = []
    event = threading.Event()

    def on_work(queue: str) -> None:
        heard.append(queue)
        event.set()

    threads_before = set(threading.enumerate())
    stop = engine.listen(on_work)
    assert stop is not None
    try:
        assert event.wait(2)  # (re)opened: anything may have arrived meanwhile
        event.clear()
        heard.clear()
        # Another connection's commit: data_version changes, the poller says "something".
        started = time.monotonic()
        app.start(hello, {"name": "x"}, queue="emails")
        assert event.wait(2)
        assert time.monotonic() - started < 1.0
        assert "" in heard
        # This engine's own commit that creates work: the queue, at once, in this thread.
        heard.clear()
        engine.start_runs([request_for(hello, {"name": "y"}, queue="reports")])
        assert "reports" in heard
    finally:
        stop()
    assert set(threading.enumerate()) <= threads_before  # the polling thread is gone
    heard.clear()
    engine.start_runs([request_for(hello, {"name": "z"}, queue="reports")])
    assert heard == []
    engine.close()
    other.close()


def test_close_releases_every_connection_and_the_engine_reopens(db_path: str) -> None:
    engine = SqliteEngine(db_path)
    app = App(engine=engine, workflows=[hello])
    app.start(hello, {"name": "x"})

    def use() -> None:
        engine.list_runs(status=None, workflow=None, limit=5)

    threads = [threading.Thread(target=use) for _ in range(5)]
    for thread in threads:
        thread.start()
        thread.join()
    use()
    # Connections of threads that are gone are closed as new ones open.
    assert len(engine._connections) <= 2
    held = [conn for _, conn in engine._connections]
    engine.close()
    for conn in held:
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")
    assert len(app.list_runs()) == 1  # reopens on use
    engine.close()
