"""Durable-execution benchmark: start throughput, processing throughput, latency, and a bare
SQL queue loop as the reference.

    python bench/durable.py                       # PostgreSQL at PYPGFLOW_BENCH_DATABASE_URL
    python bench/durable.py --runs 2000 --quick   # a shorter pass

It creates (and drops) its own database on the server. Every figure is printed with its ratio
to the bare loop (5). Workers run as separate processes, as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
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


@contextmanager
def bench_database() -> Iterator[str]:
    name = f"pypgflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(ADMIN_URL, name)
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
            time.sleep(0.3)  # let it finish starting its LISTEN connection
            return
        time.sleep(0.05)
    raise RuntimeError("the worker process did not register in time")


def wait_all_finished(url: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pypgflow.runs WHERE status = 'completed'"
            ).fetchone()
            if row and row[0] >= expected:
                return
            time.sleep(0.1)
    raise RuntimeError(f"not all {expected} runs completed within {timeout} s")


def processing_window(url: str) -> float:
    """Seconds from the first step's start to the last run's finish, read from the database."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM (SELECT max(finished_at) FROM pypgflow.runs)"
            " - (SELECT min(started_at) FROM pypgflow.tasks))"
        ).fetchone()
    assert row is not None
    return float(row[0])


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE pypgflow.runs, pypgflow.steps, pypgflow.tasks, pypgflow.instances")


# -- the workloads -----------------------------------------------------------------------------


def bench_starts(url: str, one_by_one: int, batched: int, batch_size: int) -> tuple[float, float]:
    app = make_app(url)
    try:
        app.start(one_step, {"i": -1})  # warm the pool
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
    reset(url)
    return single_rate, batch_rate


def bench_processing(url: str, workflow: Workflow, runs: int, slots: int) -> float:
    app = make_app(url)
    try:
        inputs = [{"i": i} for i in range(runs)]
        for offset in range(0, runs, 1000):
            app.start_many(workflow, inputs[offset : offset + 1000])
        with worker_process(url, slots):
            wait_all_finished(url, runs, timeout=max(60.0, runs / 50))
        rate = runs / processing_window(url)
    finally:
        app.close()
    reset(url)
    return rate


def bench_latency(url: str, starts: int, gap: float) -> list[float]:
    app = make_app(url)
    try:
        with worker_process(url, slots=10, poll_interval=5.0):
            wait_until_idle_worker(app)
            for i in range(starts):
                app.start(one_step, {"i": i})
                time.sleep(gap)
            wait_all_finished(url, starts, timeout=60)
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM t.started_at - r.created_at) * 1000"
                " FROM pypgflow.tasks t JOIN pypgflow.runs r ON r.id = t.run_id"
            ).fetchall()
    finally:
        app.close()
    reset(url)
    return sorted(float(r[0]) for r in rows)


def bench_bare_loop(url: str, jobs: int, batch: int) -> float:
    """The reference: insert jobs, claim batches with SKIP LOCKED, complete each in its own commit."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bare_jobs (id bigserial PRIMARY KEY, queue text NOT NULL,"
            " status text NOT NULL DEFAULT 'queued', payload jsonb,"
            " run_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "CREATE INDEX bare_jobs_claim ON bare_jobs (queue, run_at, id) WHERE status = 'queued'"
        )
        with conn.cursor() as cur, cur.copy("COPY bare_jobs (queue, payload) FROM STDIN") as copy:
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


def percentile(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * (len(values) - 1))))
    return values[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000, help="one-step runs to process")
    parser.add_argument("--diamonds", type=int, default=1_000, help="4-step diamond runs")
    parser.add_argument("--slots", type=int, default=100, help="worker slots for throughput")
    parser.add_argument(
        "--repeat", type=int, default=3, help="passes per throughput figure (median)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one pass")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.diamonds, args.repeat = min(args.runs, 2000), min(args.diamonds, 200), 1

    with bench_database() as url:
        App(url).migrate()
        with psycopg.connect(url) as conn:
            settings = conn.execute(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'), version()"
            ).fetchone()
        assert settings is not None
        print(
            f"PostgreSQL: {settings[2].split(',')[0]}; fsync={settings[0]}, synchronous_commit={settings[1]}"
        )
        print(f"cores: {os.cpu_count()}; passes per figure: {args.repeat} (median)\n")

        bare = statistics.median(bench_bare_loop(url, args.runs, 100) for _ in range(args.repeat))
        starts = [bench_starts(url, 2000, 20_000, 1000) for _ in range(args.repeat)]
        single = statistics.median(s for s, _ in starts)
        batched = statistics.median(b for _, b in starts)
        one = statistics.median(
            bench_processing(url, one_step, args.runs, args.slots) for _ in range(args.repeat)
        )
        one_sync = statistics.median(
            bench_processing(url, one_step_sync, args.runs, args.slots) for _ in range(args.repeat)
        )
        diamonds = statistics.median(
            bench_processing(url, diamond, args.diamonds, args.slots) for _ in range(args.repeat)
        )
        latencies = bench_latency(url, 200, 0.020)

    def row(label: str, value: float, unit: str, ratio: bool = True) -> None:
        tail = f"{value / bare:>8.2f}x" if ratio else ""
        print(f"{label:<58} {value:>10,.0f} {unit:<8} {tail}")

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
