"""How PostgreSQL announces finished runs: on a channel of its own (workers, listening for work,
are not woken), by id, in payloads that stay under NOTIFY's 8000 bytes; one LISTEN connection per
App whatever the number of waiters, closed with it; and a dropped listener connection makes its
waiters look again when it reconnects (a notification may have been lost meanwhile)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pypgflow import RunCancelled, Workflow, defaults
from pypgflow.app import App
from pypgflow.engines.base import Completed

pytestmark = pytest.mark.timeout(60)

DONE = "pypgflow_done"
WORK = "pypgflow_work"


def one_step() -> Workflow:
    flow = Workflow("one")
    flow.step(name="only")(lambda input: input)
    return flow


@pytest.fixture
def app(pg_url: str) -> Iterator[App]:
    app = App(pg_url, workflows=[one_step()])
    yield app
    app.close()


def listening(url: str, channel: str) -> int:
    """How many connections to this database sit in LISTEN on ``channel``."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = %s",
            (f'LISTEN "{channel}"',),
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_batch_finishing_many_runs_is_announced_in_payloads_under_8000_bytes(
    app: App, pg_url: str
) -> None:
    runs = app.start_many("one", range(450))
    tasks = app.engine.claim_tasks("default", 1000, instance_id="tester", workflows=["one"])
    assert len(tasks) == 450
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{DONE}"')
        listener.execute(f'LISTEN "{WORK}"')
        app.engine.finish_tasks([Completed(task, "1") for task in tasks])
        notes = list(listener.notifies(timeout=2.0))
    work = [n for n in notes if n.channel == WORK]
    done = [n for n in notes if n.channel == DONE]
    assert work == []  # a finish is no news for workers
    assert len(done) == 3  # 200 ids at most per notification
    assert all(len(n.payload.encode()) < 8000 for n in done)
    announced = [run_id for n in done for run_id in n.payload.split(",")]
    assert sorted(announced) == sorted(run.id for run in runs)


def test_one_listener_per_app_whatever_the_waiters_closed_with_the_app(
    app: App, pg_url: str
) -> None:
    runs = app.start_many("one", range(20))
    assert listening(pg_url, DONE) == 0  # started by the first wait only
    returned: list[Any] = []

    def wait(index: int) -> None:
        returned.append(runs[index].result(timeout=30))

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    wait_until(lambda: listening(pg_url, DONE) == 1, "nobody listens for finished runs")
    time.sleep(0.2)
    assert listening(pg_url, DONE) == 1
    tasks = app.engine.claim_tasks("default", 100, instance_id="tester", workflows=["one"])
    app.engine.finish_tasks([Completed(task, "7") for task in tasks])
    for thread in threads:
        thread.join(timeout=10)
    assert returned == [7] * 20
    assert listening(pg_url, DONE) == 1  # kept for the next waits
    app.close()
    wait_until(lambda: listening(pg_url, DONE) == 0, "App.close() left its listener")


def test_waiters_look_again_when_the_listener_reconnects(
    app: App, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The safety re-check is far off: only the reconnection can wake the waiter in time.
    monkeypatch.setattr(defaults, "RESULT_RECHECK_INTERVAL", 60.0)
    real = app.engine.listen_finished

    def lossy(on_finished: Callable[[str], None]) -> Callable[[], None] | None:
        # Announcements of runs are lost; the wakes of (re)connections ("") get through.
        return real(lambda run_id: on_finished(run_id) if run_id == "" else None)

    monkeypatch.setattr(app.engine, "listen_finished", lossy)
    run = app.start("one", None, delay=60)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            run.result(timeout=30)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: listening(pg_url, DONE) == 1, "nobody listens for finished runs")
    assert run.cancel() is True  # announced, and the announcement lost
    time.sleep(0.3)
    assert waiter.is_alive()  # nothing woke it
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = %s",
            (f'LISTEN "{DONE}"',),
        )
    started = time.monotonic()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RunCancelled), outcome
    assert time.monotonic() - started < 5.0
