"""What every pooled connection is set to: JIT compilation off. A run's steps with a map of
10,000 elements were estimated at a million (the aggregates over its tasks) and read in 13 ms,
after 334 ms of JIT compilation: get_run took 377 ms, and the dashboard's run page with it."""

from __future__ import annotations

from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine


def test_pooled_connections_do_not_jit_compile(pg_url: str) -> None:
    with App(pg_url) as app:
        engine = app.engine
        assert isinstance(engine, PostgresEngine)
        with engine._connection() as conn:
            assert conn.execute("SHOW jit").fetchone() == ("off",)
        with engine._connection(autocommit=True) as conn:  # reads too
            assert conn.execute("SHOW jit").fetchone() == ("off",)
