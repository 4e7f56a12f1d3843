"""What only the SQLite engine's connections do: one connection per thread, closed with the
engine and reopened on use; a ``sqlite://:memory:`` database shared by the threads of one process;
other processes' commits heard by polling ``PRAGMA data_version``; and no caller's transaction to
start a run in (``connection=`` needs PostgreSQL). The behaviour both engines share is proven in
tests/contract."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from pypgflow import Workflow, orchestration
from pypgflow.app import App
from pypgflow.engines.base import StartRequest
from pypgflow.engines.sqlfile import migration_files
from pypgflow.engines.sqlite import SqliteEngine
from pypgflow.errors import NotSupported
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

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


def test_finished_runs_are_heard_by_id_here_and_by_data_version_elsewhere(db_path: str) -> None:
    engine = SqliteEngine(db_path)
    other = SqliteEngine(db_path)  # another connection, as another process would have
    app = App(engine=other, workflows=[hello])
    heard: list[str] = []
    event = threading.Event()

    def on_finished(run_id: str) -> None:
        heard.append(run_id)
        event.set()

    stop = engine.listen_finished(on_finished)
    assert stop is not None
    try:
        assert event.wait(2)  # (re)opened: runs may have finished meanwhile
        # Another connection's commit: data_version changes, the poller says "something".
        run = app.start(hello, {"name": "x"}, delay=60)
        event.clear()
        heard.clear()
        started = time.monotonic()
        assert run.cancel() is True
        assert event.wait(2)
        assert time.monotonic() - started < 1.0
        assert "" in heard
        # This engine's own commit that finishes a run: its id, at once, in this thread.
        mine = App(engine=engine, workflows=[hello]).start(hello, {"name": "y"}, delay=60)
        heard.clear()
        assert engine.cancel_run(mine.id) is True
        assert mine.id in heard
        # A commit that finishes nothing announces nothing here.
        heard.clear()
        engine.start_runs([request_for(hello, {"name": "z"})])
        assert [run_id for run_id in heard if run_id] == []
    finally:
        stop()
    heard.clear()
    later = App(engine=engine, workflows=[hello]).start(hello, {"name": "w"}, delay=60)
    assert engine.cancel_run(later.id) is True
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
    readers = engine._connections._readers
    assert len(readers) <= 2
    held = [conn for _, conn in readers] + [engine._writer()]
    engine.close()
    for conn in held:
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")
    assert len(app.list_runs()) == 1  # reopens on use
    engine.close()
