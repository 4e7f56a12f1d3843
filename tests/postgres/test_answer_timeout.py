"""A server that goes silent without closing the connection (a half-open connection) fails a
call after ``answer_timeout`` instead of hanging it for good, and the engine carries on with
new connections once the server answers again; a LISTEN connection notices it too. Found by the
network-fault scenario of tests/chaos: a worker behind a half-open link never came back."""

from __future__ import annotations

import threading
import time

import pytest

from pypgflow import DatabaseUnavailable, InvalidArgument, Workflow
from pypgflow.app import App
from pypgflow.engines.postgres import listen
from pypgflow.engines.postgres.engine import PostgresEngine
from tests.integration.proxy import TcpProxy

pytestmark = pytest.mark.timeout(60)

flow = Workflow("answer_probe")
flow.step(name="echo")(lambda input: input)


@pytest.mark.parametrize("bad", [0, -1.0, True, "10", float("nan")])
def test_answer_timeout_must_be_a_positive_number_or_none(pg_url: str, bad: object) -> None:
    with pytest.raises(InvalidArgument, match="answer_timeout must be a number of seconds"):
        PostgresEngine(pg_url, answer_timeout=bad)  # type: ignore[arg-type]
    assert PostgresEngine(pg_url, answer_timeout=None).answer_timeout is None
    assert PostgresEngine(pg_url).answer_timeout == 60.0


def test_a_half_open_connection_fails_the_call_after_answer_timeout_then_work_goes_on(
    pg_url: str,
) -> None:
    with TcpProxy("127.0.0.1", 5432) as proxy:
        engine = PostgresEngine(proxy.url_for(pg_url), answer_timeout=1.0, max_connections=1)
        with App(engine=engine, workflows=[flow]) as app:
            run = app.start(flow, {"n": 1})
            proxy.half_open()
            proxy.restore()  # new connections pass again; the pooled ones stay dead
            began = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                app.get_run(run.id)  # the pool's one connection, left half open
            assert time.monotonic() - began < 1.0 + 2.0
            assert app.get_run(run.id).input == {"n": 1}  # a new connection, at once
            assert engine._connections.deadline.expired >= 1


def test_a_listening_connection_left_half_open_is_noticed_and_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listen, "PROBE_AFTER", 0.5)
    with TcpProxy("127.0.0.1", 5432) as proxy:
        engine = PostgresEngine(proxy.url_for(pg_url), answer_timeout=1.0)
        connected = threading.Semaphore(0)
        stop = engine.listen(lambda queue: queue or connected.release())
        assert stop is not None
        try:
            assert connected.acquire(timeout=10)
            proxy.half_open()
            proxy.restore()
            began = time.monotonic()
            assert connected.acquire(timeout=10), "the listener never reconnected"
            assert time.monotonic() - began < 0.5 + 1.0 + 3.0
        finally:
            stop()
            engine.close()
