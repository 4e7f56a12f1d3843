"""Durable-execution benchmark: start throughput, processing throughput, latency, and a bare
SQL queue loop as the reference.

    python bench/durable.py                       # both engines, PostgreSQL and SQLite
    python bench/durable.py --engine sqlite       # one of them
    python bench/durable.py --quick               # a shorter pass

PostgreSQL: the server at PYPGFLOW_BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), in a
database the benchmark creates and drops. SQLite: a file in a temporary directory, at its
default durability (synchronous=FULL). Every figure is printed with its ratio to the bare loop
(5) on the same engine. Workers run as separate processes, as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from pypgflow import Workflow
from pypgflow.app import App

ADMIN_URL = os.environ.get(
    "PYPGFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# -- the workflows measured --------------------------------------------------------------------

one_step = Workflow("bench_one_step")


@one_step.step
async def noop(input: Any) -> Any:
    return input


one_step_sync = Workflow("bench_one_step_sync")


@one_step_sync.step(name="noop")
def noop_sync(input: Any) -> Any:
    return input


diamond = Workflow("bench_diamond")


@diamond.step
async def top(input: Any) -> int:
    return 1


@diamond.step(depends_on=["top"])
async def left(top: int) -> int:
    return top + 1


@diamond.step(depends_on=["top"])
async def right(top: int) -> int:
    return top + 2


@diamond.step(depends_on=["left", "right"])
async def bottom(left: int, right: int) -> int:
    return left + right


WORKFLOWS = [one_step, one_step_sync, diamond]


def make_app(url: str) -> App:
    return App(url, workflows=WORKFLOWS)


# -- helpers -----------------------------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


class Store:
    """Direct access to the benchmark's database, for what the App does not expose (timings
    read from the tables, the bare queue loop). SQL here is the benchmark's own."""

    url: str

    def scalar(self, query: str) -> Any:
        raise NotImplementedError

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def bare_loop(self, jobs: int, batch: int) -> float:
        raise NotImplementedError

    # seconds between two timestamp columns, in each dialect
    window_sql: str
    latency_sql: str
    completed_sql = "SELECT count(*) FROM {p}runs WHERE status = 'completed'"


class PostgresStore(Store):
    prefix = "pypgflow."
    window_sql = (
        "SELECT extract(epoch FROM (SELECT max(finished_at) FROM pypgflow.runs)"
        " - (SELECT min(started_at) FROM pypgflow.tasks))"
    )
    latency_sql = (
        "SELECT extract(epoch FROM t.started_at - r.created_at) * 1000"
        " FROM pypgflow.tasks t JOIN pypgflow.runs r ON r.id = t.run_id"
    )

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query.format(p=self.prefix))  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def scalar(self, query: str) -> Any:
        return self.rows(query)[0][0]

    def reset(self) -> None:
        self.rows("TRUNCATE pypgflow.runs, pypgflow.steps, pypgflow.tasks, pypgflow.instances")

    def describe(self) -> str:
        row = self.rows(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'), version()"
        )[0]
        return f"{row[2].split(',')[0]}; fsync={row[0]}, synchronous_commit={row[1]}"

    def bare_loop(self, jobs: int, batch: int) -> float:
        """Insert jobs, claim batches with SKIP LOCKED, complete each in its own commit."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE bare_jobs (id bigserial PRIMARY KEY, queue text NOT NULL,"
                " status text NOT NULL DEFAULT 'queued', payload jsonb,"
                " run_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute(
                "CREATE INDEX bare_jobs_claim ON bare_jobs (queue, run_at, id)"
                " WHERE status = 'queued'"
            )
            with (
                conn.cursor() as cur,
                cur.copy("COPY bare_jobs (queue, payload) FROM STDIN") as copy,
            ):
                for i in range(jobs):
                    copy.write_row(("default", json.dumps({"i": i})))
            started = time.perf_counter()
            done = 0
            while done < jobs:
                claimed = conn.execute(
                    "UPDATE bare_jobs SET status = 'running' WHERE id IN ("
                    " SELECT id FROM bare_jobs WHERE status = 'queued' AND queue = 'default'"
                    " AND run_at <= now() ORDER BY run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
                    " RETURNING id, payload",
                    (batch,),
                ).fetchall()
                for job_id, _payload in claimed:
                    conn.execute("UPDATE bare_jobs SET status = 'done' WHERE id = %s", (job_id,))
                done += len(claimed)
            rate = jobs / (time.perf_counter() - started)
            conn.execute("DROP TABLE bare_jobs")
        return rate


class SqliteStore(Store):
    prefix = ""
    window_sql = "SELECT (SELECT max(finished_at) FROM runs) - (SELECT min(started_at) FROM tasks)"
    latency_sql = (
        "SELECT (t.started_at - r.created_at) * 1000 FROM tasks t JOIN runs r ON r.id = t.run_id"
    )

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            return conn.execute(query.format(p=self.prefix)).fetchall()
        finally:
            conn.commit()
            conn.close()

    def scalar(self, query: str) -> Any:
        return self.rows(query)[0][0]

    def reset(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.executescript(
                "DELETE FROM tasks; DELETE FROM steps; DELETE FROM runs; DELETE FROM instances;"
            )
        finally:
            conn.close()

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}; WAL, synchronous=FULL"

    def bare_loop(self, jobs: int, batch: int) -> float:
        """The same loop on SQLite: a write transaction per claim batch and per completion."""
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE bare_jobs (id INTEGER PRIMARY KEY, queue TEXT NOT NULL,"
            " status TEXT NOT NULL DEFAULT 'queued', payload TEXT, run_at REAL NOT NULL DEFAULT 0)"
        )
        conn.execute(
            "CREATE INDEX bare_jobs_claim ON bare_jobs (queue, run_at, id) WHERE status = 'queued'"
        )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO bare_jobs (queue, payload) VALUES ('default', ?)",
            [(json.dumps({"i": i}),) for i in range(jobs)],
        )
        conn.execute("COMMIT")
        started = time.perf_counter()
        done = 0
        while done < jobs:
            conn.execute("BEGIN IMMEDIATE")
            claimed = conn.execute(
                "UPDATE bare_jobs SET status = 'running' WHERE id IN ("
                " SELECT id FROM bare_jobs WHERE status = 'queued' AND queue = 'default'"
                " ORDER BY run_at, id LIMIT ?) RETURNING id, payload",
                (batch,),
            ).fetchall()
            conn.execute("COMMIT")
            for job_id, _payload in claimed:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("UPDATE bare_jobs SET status = 'done' WHERE id = ?", (job_id,))
                conn.execute("COMMIT")
            done += len(claimed)
        rate = jobs / (time.perf_counter() - started)
        conn.execute("DROP TABLE bare_jobs")
        conn.close()
        return rate


@contextmanager
def bench_store(engine: str) -> Iterator[PostgresStore | SqliteStore]:
    """A fresh, migrated database of ``engine``, removed afterwards."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pypgflow-bench-") as directory:
            store = SqliteStore(os.path.join(directory, "bench.db"))
            App(store.url).migrate()
            yield store
        return
    name = f"pypgflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        pg = PostgresStore(with_dbname(ADMIN_URL, name))
        App(pg.url).migrate()
        yield pg
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def worker_process(
    url: str, slots: int, poll_interval: float = 1.0
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        sys.executable, __file__, "worker", "--url", url, "--slots", str(slots),
        "--poll-interval", str(poll_interval),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            assert process.stderr is not None
            sys.stderr.write(process.stderr.read().decode(errors="replace")[-3000:])


def wait_until_idle_worker(app: App, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.instances():
            time.sleep(0.3)  # let it finish starting its listener
            return
        time.sleep(0.05)
    raise RuntimeError("the worker process did not register in time")


def wait_all_finished(store: Store, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.scalar(Store.completed_sql) >= expected:
            return
        time.sleep(0.1)
    raise RuntimeError(f"not all {expected} runs completed within {timeout} s")


# -- the workloads -----------------------------------------------------------------------------


def bench_starts(
    store: Store, one_by_one: int, batched: int, batch_size: int
) -> tuple[float, float]:
    app = make_app(store.url)
    try:
        app.start(one_step, {"i": -1})  # warm up
        started = time.perf_counter()
        for i in range(one_by_one):
            app.start(one_step, {"i": i})
        single_rate = one_by_one / (time.perf_counter() - started)
        inputs = [{"i": i} for i in range(batched)]
        started = time.perf_counter()
        for offset in range(0, batched, batch_size):
            app.start_many(one_step, inputs[offset : offset + batch_size])
        batch_rate = batched / (time.perf_counter() - started)
    finally:
        app.close()
    store.reset()
    return single_rate, batch_rate


def bench_processing(store: Store, workflow: Workflow, runs: int, slots: int) -> float:
    app = make_app(store.url)
    try:
        inputs = [{"i": i} for i in range(runs)]
        for offset in range(0, runs, 1000):
            app.start_many(workflow, inputs[offset : offset + 1000])
        with worker_process(store.url, slots):
            wait_all_finished(store, runs, timeout=max(60.0, runs / 50))
        rate = runs / float(store.scalar(store.window_sql))
    finally:
        app.close()
    store.reset()
    return rate


def bench_latency(store: Store, starts: int, gap: float) -> list[float]:
    app = make_app(store.url)
    try:
        with worker_process(store.url, slots=10, poll_interval=5.0):
            wait_until_idle_worker(app)
            for i in range(starts):
                app.start(one_step, {"i": i})
                time.sleep(gap)
            wait_all_finished(store, starts, timeout=60)
        rows = store.rows(store.latency_sql)
    finally:
        app.close()
    store.reset()
    return sorted(float(r[0]) for r in rows)


def percentile(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * (len(values) - 1))))
    return values[index]


def measure(engine: str, args: argparse.Namespace) -> None:
    with bench_store(engine) as store:
        print(f"== {engine}: {store.describe()}; cores: {os.cpu_count()}; "
              f"passes per figure: {args.repeat} (median)")  # fmt: skip
        bare = statistics.median(store.bare_loop(args.runs, 100) for _ in range(args.repeat))
        starts = [bench_starts(store, 2000, 20_000, 1000) for _ in range(args.repeat)]
        single = statistics.median(s for s, _ in starts)
        batched = statistics.median(b for _, b in starts)
        one = statistics.median(
            bench_processing(store, one_step, args.runs, args.slots) for _ in range(args.repeat)
        )
        one_sync = statistics.median(
            bench_processing(store, one_step_sync, args.runs, args.slots)
            for _ in range(args.repeat)
        )
        diamonds = statistics.median(
            bench_processing(store, diamond, args.diamonds, args.slots) for _ in range(args.repeat)
        )
        latencies = bench_latency(store, 200, 0.020)

    def row(label: str, value: float, unit: str) -> None:
        print(f"{label:<58} {value:>10,.0f} {unit:<8} {value / bare:>8.2f}x")

    print(f"{'figure':<58} {'value':>10} {'unit':<8} {'vs (5)':>9}")
    row("(1a) starts, one by one (app.start)", single, "runs/s")
    row("(1b) starts, batched (app.start_many, 1000 per call)", batched, "runs/s")
    row(f"(2)  {args.runs:,} one-step runs, 1 worker, async step", one, "runs/s")
    row(f"(2') {args.runs:,} one-step runs, 1 worker, sync step", one_sync, "runs/s")
    row(f"(3)  {args.diamonds:,} 4-step diamond runs, 1 worker", diamonds, "runs/s")
    row("(3') the same, in steps", diamonds * 4, "steps/s")
    print(
        f"{'(4)  start-to-first-step latency, idle worker (200 starts)':<58} "
        f"p50 {percentile(latencies, 50):.2f} ms, p95 {percentile(latencies, 95):.2f} ms, "
        f"p99 {percentile(latencies, 99):.2f} ms"
    )
    row("(5)  bare SQL queue loop (reference)", bare, "jobs/s")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10_000, help="one-step runs to process")
    parser.add_argument("--diamonds", type=int, default=1_000, help="4-step diamond runs")
    parser.add_argument("--slots", type=int, default=100, help="worker slots for throughput")
    parser.add_argument("--repeat", type=int, default=3, help="passes per figure (median)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one pass")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.diamonds, args.repeat = min(args.runs, 2000), min(args.diamonds, 200), 1
    for engine in ("postgres", "sqlite") if args.engine == "both" else (args.engine,):
        measure(engine, args)


def worker_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--slots", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    make_app(args.url).run_worker({"default": args.slots}, poll_interval=args.poll_interval)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main()
    else:
        main()
