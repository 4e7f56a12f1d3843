"""connection=: a run started inside the caller's own psycopg transaction exists only if that
transaction commits (sync Connection with start, AsyncConnection with start_async)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from pypgflow import InvalidArgument, RunNotFound, Workflow
from pypgflow.app import App
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)

flow = Workflow("txn")
flow.step(name="echo")(lambda input: input)


@pytest.fixture
def app(pg_url: str) -> Iterator[App]:
    app = App(pg_url, workflows=[flow])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    yield app
    app.close()


def orders(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM orders ORDER BY id")]


def test_commit_keeps_the_run_and_the_callers_rows(app: App, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO orders VALUES (1)")
        run = app.start(flow, {"order": 1}, connection=conn)
        # Not visible outside the transaction before it commits...
        with pytest.raises(RunNotFound):
            app.get_run(run.id)
        assert app.list_runs() == []
    # ...and there once it has (the `with` block commits).
    assert app.get_run(run.id).input == {"order": 1}
    assert orders(pg_url) == [1]
    with running_worker(app):
        assert run.result(timeout=5) == {"order": 1}


def test_rollback_leaves_no_trace(app: App, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO orders VALUES (2)")
        run = app.start(flow, {"order": 2}, connection=conn)
        many = app.start_many(flow, [1, 2, 3], connection=conn)
        conn.rollback()
    with pytest.raises(RunNotFound):
        app.get_run(run.id)
    assert all(app.list_runs() == [] for _ in many)
    assert orders(pg_url) == []
    with running_worker(app):
        pass  # nothing to run, and nothing breaks


def test_an_exception_in_the_callers_block_rolls_the_run_back(app: App, pg_url: str) -> None:
    class OrderRejected(Exception):
        pass

    def place_order() -> None:
        with psycopg.connect(pg_url) as conn:
            conn.execute("INSERT INTO orders VALUES (4)")
            app.start(flow, 1, connection=conn)
            raise OrderRejected

    with pytest.raises(OrderRejected):
        place_order()
    assert app.list_runs() == []
    assert orders(pg_url) == []


def test_a_worker_wakes_for_a_run_committed_later(app: App, pg_url: str) -> None:
    with running_worker(app, poll_interval=5.0):  # only the notification can wake it in time
        with psycopg.connect(pg_url) as conn:
            run = app.start(flow, "notified", connection=conn)
        assert run.result(timeout=3) == "notified"


def test_the_callers_row_factory_does_not_matter(app: App, pg_url: str) -> None:
    with psycopg.connect(pg_url, row_factory=dict_row) as conn:
        run = app.start(flow, 1, connection=conn)
        again = app.start(flow, 2, idempotency_key="k", connection=conn)
        same = app.start(flow, 2, idempotency_key="k", connection=conn)
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}  # left as it was
    assert same.id == again.id
    assert {r.id for r in app.list_runs()} == {run.id, again.id}


def test_idempotency_key_inside_the_callers_transaction(app: App, pg_url: str) -> None:
    first = app.start(flow, 1, idempotency_key="pay-1")
    with psycopg.connect(pg_url) as conn:
        again = app.start(flow, 1, idempotency_key="pay-1", connection=conn)
    assert again.id == first.id


def test_async_connection_commit_and_rollback(app: App, pg_url: str) -> None:
    async def scenario() -> tuple[str, str, list[str]]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            await conn.execute("INSERT INTO orders VALUES (3)")
            kept = await app.start_async(flow, "kept", connection=conn)
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            dropped = await app.start_async(flow, "dropped", connection=conn)
            batch = await app.start_many_async(flow, [1, 2], connection=conn)
            await conn.rollback()
        return kept.id, dropped.id, [r.id for r in batch]

    kept, dropped, batch = asyncio.run(scenario())
    assert app.get_run(kept).input == "kept"
    for run_id in (dropped, *batch):
        with pytest.raises(RunNotFound):
            app.get_run(run_id)
    assert orders(pg_url) == [3]


def test_async_connection_with_a_dict_row_factory(app: App, pg_url: str) -> None:
    async def scenario() -> list[str]:
        async with await psycopg.AsyncConnection.connect(pg_url, row_factory=dict_row) as conn:
            a = await app.start_async(flow, 1, idempotency_key="ak", connection=conn)
            b = await app.start_async(flow, 1, idempotency_key="ak", connection=conn)
        return [a.id, b.id]

    a, b = asyncio.run(scenario())
    assert a == b
    assert app.get_run(a).input == 1


def test_the_wrong_kind_of_connection_is_refused_clearly(app: App, pg_url: str) -> None:
    with pytest.raises(InvalidArgument, match="psycopg"):
        app.start(flow, 1, connection=object())

    async def sync_conn_in_async() -> None:
        with psycopg.connect(pg_url) as conn:
            await app.start_async(flow, 1, connection=conn)

    with pytest.raises(InvalidArgument, match="AsyncConnection"):
        asyncio.run(sync_conn_in_async())

    async def async_conn_in_sync() -> None:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            app.start(flow, 1, connection=conn)

    with pytest.raises(InvalidArgument, match="start_async"):
        asyncio.run(async_conn_in_sync())
    assert app.list_runs() == []
