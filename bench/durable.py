"""Durable-execution benchmark: start throughput, processing throughput, start-to-first-step
latency, and a bare SQL queue loop as the reference, on both engines.

    python bench/durable.py                       # both engines, PostgreSQL and SQLite
    python bench/durable.py --engine sqlite       # one of them
    python bench/durable.py --quick               # smaller workloads, one pass: a smoke run
    python bench/durable.py --slots 100           # the worker with queues={"default": 100}
    python bench/durable.py --telemetry           # (1) and (2) with telemetry off, then on
    python bench/durable.py --limits              # (2) with no limit, then concurrency=50

How it measures
---------------
PostgreSQL: the server at PYPGFLOW_BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), in a
database the benchmark creates, migrates (``App.migrate``) and drops. SQLite: a file in a
temporary directory, at the engine's default durability (WAL, synchronous=FULL). The tables are
emptied between passes.

This process is the producer (a synchronous ``App``); the worker is a separate process it spawns
for each pass (this file with ``worker``), as in production. It imports pypgflow and the probe
only, so its start-up is pypgflow's own (psycopg is imported by the producer's PostgreSQL code,
or by pypgflow's PostgreSQL engine). The worker is what a user runs:
``App(url, workflows=[...]).run_worker()`` with no options, i.e. the ``Worker`` defaults (queue
"default" with 100 slots, async steps on the loop, sync steps in a thread pool; woken by
LISTEN/NOTIFY on PostgreSQL, by a look at ``PRAGMA data_version`` every 5 ms on SQLite, else
every second); with ``--slots N``, ``queues={"default": N}``. The figures' names say which.

Every figure is wall-clock time as a user sees it, measured as bench/peers.py measures:
``time.perf_counter()`` around the producer's calls, ``time.time()`` at the spawn, in a step's
first line (through bench/peers_probe.py, which writes it to a file) and in the poller; never a
database timestamp (``now()`` is when a transaction began, not when its writes became visible).
The poller is one connection of this process that asks every 15 ms whether any run is still
pending or running: an ``EXISTS`` on the ``runs_status_created`` index, the same statement on
both engines (on SQLite on the same file, a read that does not block the worker's writes).
Every pass ends by checking that every run completed. Each figure is the median of ``--repeat``
passes (default 3); every rate is printed with its ratio to the bare loop (5) on the same
engine.

The figures
-----------
(1a) starts one by one: 2,000 ``app.start`` calls, per second, timed around the calls (one
     warm-up start first). (1b) batched: 20,000 runs in ``app.start_many`` calls of 1,000.
(2)  processing: 10,000 one-step runs with an async no-op step started first, then one worker
     spawned. Per second from the spawn until the poller sees every run finished (the worker's
     start-up included), and from the step's first call until then. (2') the same with a plain
     ``def`` step.
(3)  the same for 1,000 four-step diamond runs (top -> left, right -> bottom), in runs and in
     steps per second.
(4)  start-to-first-step latency with an idle worker (spawned, one warm-up run, then 0.5 s
     idle): 200 ``app.start`` calls on a 10 ms grid; the producer notes ``time.time()`` just
     before each call, the step at its first line (the run's input carries the sample number);
     p50 / p95 / p99 in ms.
(5)  the reference: a bare SQL queue loop on the same engine (jobs inserted first, then batches
     of 100 claimed, each job completed in its own commit), timed around the loop.

With ``--telemetry``, only (1a), (1b) and (2) are measured, each pass twice: with telemetry off
(as above), then on in the producer and in the worker (bench/bench_telemetry.py: traces through
an OpenTelemetry SDK tracer provider to an exporter that drops them, and the Prometheus
collectors), with the ratio of on to off.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_flows
from peers_probe import PROBE, add_arguments
from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.defaults import DEFAULT_SLOTS

ADMIN_URL = os.environ.get(
    "PYPGFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: seconds between two looks of the poller
POLL_INTERVAL = 0.015
#: runs per ``start_many`` call when a pass starts its runs before its worker
FILL_BATCH = 1000
#: figure (4): starts, and seconds between two of them
LATENCY_STARTS = 200
LATENCY_GAP = 0.010

# -- the workflows measured (bench/bench_flows.py: their first step notes the time of its first
# line) ------------------------------------------------------------------------------------------

one_step = bench_flows.noop
one_step_sync = bench_flows.noop_sync
diamond = bench_flows.diamond

one_step_limited = bench_flows.noop_limited

WORKFLOWS = {flow.name: flow for flow in (one_step, one_step_sync, diamond, one_step_limited)}


def make_app(url: str, workflow: Workflow, telemetry: bool = False) -> App:
    app = App(url, workflows=[workflow])
    if telemetry:
        import bench_telemetry

        bench_telemetry.turn_on(app)
    return app


# -- the databases -----------------------------------------------------------------------------


class Store:
    """Direct access to the benchmark's database, for what the App does not expose (the poller,
    the completion check, the bare queue loop). SQL here is the benchmark's own."""

    url: str
    #: true while some run is not finished, for the poller (cheap: it runs every POLL_INTERVAL)
    pending_sql: str
    completed_sql: str

    def scalar(self, query: str) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def bare_loop(self, jobs: int, batch: int) -> float:
        raise NotImplementedError

    def poller(self) -> AbstractContextManager[Callable[[], bool]]:
        """A function that runs ``pending_sql`` on a connection of its own."""
        raise NotImplementedError


class PostgresStore(Store):
    # index-only scans of runs_status_created: about 0.1 ms with 10,000 runs waiting
    pending_sql = "SELECT EXISTS (SELECT FROM pypgflow.runs WHERE status IN ('pending', 'running'))"
    completed_sql = "SELECT count(*) FROM pypgflow.runs WHERE status = 'completed'"

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def scalar(self, query: str) -> Any:
        return self.rows(query)[0][0]

    def reset(self) -> None:
        self.rows("TRUNCATE pypgflow.runs, pypgflow.tasks, pypgflow.instances")

    def describe(self) -> str:
        row = self.rows(
            "SELECT current_setting('server_version'), current_setting('fsync'),"
            " current_setting('synchronous_commit')"
        )[0]
        return f"PostgreSQL {row[0]}; fsync={row[1]}, synchronous_commit={row[2]}"

    @contextmanager
    def poller(self) -> Iterator[Callable[[], bool]]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:

            def pending() -> bool:
                row = conn.execute(self.pending_sql).fetchone()  # type: ignore[arg-type]
                assert row is not None
                return bool(row[0])

            yield pending

    def bare_loop(self, jobs: int, batch: int) -> float:
        """Insert jobs, claim batches with SKIP LOCKED, complete each in its own commit."""
        import psycopg

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
    # a covering read of runs_status_created
    pending_sql = "SELECT EXISTS (SELECT 1 FROM runs WHERE status IN ('pending', 'running'))"
    completed_sql = "SELECT count(*) FROM runs WHERE status = 'completed'"

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def scalar(self, query: str) -> Any:
        conn = self.connect()
        try:
            return conn.execute(query).fetchone()[0]
        finally:
            conn.close()

    def reset(self) -> None:
        conn = self.connect()
        try:
            conn.executescript(
                "BEGIN IMMEDIATE; DELETE FROM tasks; DELETE FROM runs;"
                " DELETE FROM instances; COMMIT;"
            )
        finally:
            conn.close()

    def describe(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}; WAL, synchronous=FULL"

    @contextmanager
    def poller(self) -> Iterator[Callable[[], bool]]:
        conn = self.connect()
        try:

            def pending() -> bool:
                return bool(conn.execute(self.pending_sql).fetchone()[0])

            yield pending
        finally:
            conn.close()

    def bare_loop(self, jobs: int, batch: int) -> float:
        """The same loop on SQLite: a write transaction per claim batch and per completion."""
        conn = self.connect()
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
            with App(store.url) as app:
                app.migrate()
            yield store
        return
    import psycopg
    from psycopg import sql

    def admin(statement: sql.Composed) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(statement)

    name = f"pypgflow_bench_{uuid.uuid4().hex[:8]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        pg = PostgresStore(psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name))
        with App(pg.url) as app:
            app.migrate()
        yield pg
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- the worker and the poller -----------------------------------------------------------------


@dataclass
class Worker:
    """The worker process of one pass, and what it tells the producer."""

    process: subprocess.Popen[bytes]
    spawned_at: float
    first_call_file: Path
    stderr_file: Path

    def first_call(self) -> float:
        if not self.first_call_file.exists():
            raise RuntimeError("the worker recorded no first step call")
        return float(self.first_call_file.read_text())

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.stderr_file.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{tail}")


@contextmanager
def spawn_worker(
    url: str,
    workflow: Workflow,
    slots: int | None,
    directory: Path,
    calls: Path | None = None,
    telemetry: bool = False,
) -> Iterator[Worker]:
    """Start a worker process (at its defaults unless ``slots``); stop it with SIGTERM
    (graceful) at the end."""
    first_call = directory / "first-call"
    stderr = directory / "stderr"
    command = [sys.executable, __file__, "worker", "--url", url, "--job", workflow.name]
    command += ["--first-call", str(first_call)]
    if calls is not None:
        command += ["--calls", str(calls)]
    if slots is not None:
        command += ["--slots", str(slots)]
    if telemetry:
        command += ["--telemetry"]
    with stderr.open("wb") as err:
        spawned_at = time.time()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield Worker(process, spawned_at, first_call, stderr)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            tail = stderr.read_text(errors="replace")[-3000:]
            sys.stderr.write(f"the worker exited with {process.returncode}:\n{tail}\n")


def watch(store: Store, worker: Worker, timeout: float) -> float:
    """Poll every POLL_INTERVAL until no run is pending or running; the ``time.time()`` at
    which the poller saw it."""
    deadline = time.monotonic() + timeout
    with store.poller() as pending:
        while True:
            still = pending()
            seen_at = time.time()
            if not still:
                return seen_at
            if time.monotonic() > deadline:
                raise RuntimeError(f"runs still not finished after {timeout} s")
            worker.check_alive()
            time.sleep(POLL_INTERVAL)


def check_all_completed(store: Store, expected: int) -> None:
    done = int(store.scalar(store.completed_sql))
    if done != expected:
        raise RuntimeError(f"{done} runs completed, expected {expected}")


# -- the passes --------------------------------------------------------------------------------


def bench_starts(
    store: Store, one_by_one: int, batched: int, batch_size: int, telemetry: bool = False
) -> tuple[float, float]:
    """Runs per second started one call at a time, and ``batch_size`` per call."""
    with make_app(store.url, one_step, telemetry) as app:
        app.start(one_step, {"i": -1})  # warm up: the pool's connection, prepared statements
        started = time.perf_counter()
        for i in range(one_by_one):
            app.start(one_step, {"i": i})
        single_rate = one_by_one / (time.perf_counter() - started)
        inputs = [{"i": i} for i in range(batched)]
        started = time.perf_counter()
        for offset in range(0, batched, batch_size):
            app.start_many(one_step, inputs[offset : offset + batch_size])
        batch_rate = batched / (time.perf_counter() - started)
    store.reset()
    return single_rate, batch_rate


@dataclass
class Processed:
    """One processing pass, in the producer's wall-clock seconds."""

    runs: int
    from_spawn: float
    from_first_call: float


def bench_processing(
    store: Store, workflow: Workflow, runs: int, slots: int | None, telemetry: bool = False
) -> Processed:
    """Start the runs, spawn the worker, and time until the poller sees them all finished."""
    with make_app(store.url, workflow, telemetry) as app:
        inputs = [{"i": i} for i in range(runs)]
        for offset in range(0, runs, FILL_BATCH):
            app.start_many(workflow, inputs[offset : offset + FILL_BATCH])
    with tempfile.TemporaryDirectory() as tmp:
        with spawn_worker(store.url, workflow, slots, Path(tmp), telemetry=telemetry) as worker:
            done_at = watch(store, worker, timeout=max(120.0, runs / 50))
            first_call = worker.first_call()
        check_all_completed(store, runs)
    store.reset()
    return Processed(runs, done_at - worker.spawned_at, done_at - first_call)


def bench_latency(store: Store, starts: int, gap: float) -> list[float]:
    """Start-to-first-step latencies in ms, sorted, with an idle worker at its defaults."""
    with tempfile.TemporaryDirectory() as tmp, make_app(store.url, one_step) as app:
        calls = Path(tmp) / "calls"
        with spawn_worker(store.url, one_step, None, Path(tmp), calls=calls) as worker:
            app.start(one_step, {"i": -1})  # warm up both sides
            watch(store, worker, timeout=60)
            time.sleep(0.5)  # idle
            sent: dict[int, float] = {}
            due = time.perf_counter()
            for i in range(starts):
                sent[i] = time.time()
                app.start(one_step, {"i": i})
                due += gap
                time.sleep(max(0.0, due - time.perf_counter()))
            watch(store, worker, timeout=60)
        check_all_completed(store, starts + 1)
        received: dict[int, float] = {}
        for line in calls.read_text().splitlines():
            sample, at = line.split()
            received.setdefault(int(sample), float(at))
    store.reset()
    return sorted((received[i] - at) * 1000 for i, at in sent.items())


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * (len(values) - 1))))
    return values[index]


# -- the figures -------------------------------------------------------------------------------


def measure(engine: str, args: argparse.Namespace) -> None:
    if args.slots is None:
        worker = f"1 worker at defaults ({DEFAULT_SLOTS} slots)"
    else:
        worker = f"1 worker, queues={{'default': {args.slots}}}"
    with bench_store(engine) as store:
        print(
            f"== {engine}: {store.describe()}; cores: {os.cpu_count()}; "
            f"passes per figure: {args.repeat} (median); wall clock"
            f"{'; QUICK counts' if args.quick else ''}",
            flush=True,
        )
        repeat = range(args.repeat)
        bare = median(store.bare_loop(args.runs, 100) for _ in repeat)
        starts = [bench_starts(store, 2000, 20_000, 1000) for _ in repeat]
        one = [bench_processing(store, one_step, args.runs, args.slots) for _ in repeat]
        one_sync = [bench_processing(store, one_step_sync, args.runs, args.slots) for _ in repeat]
        diamonds = [bench_processing(store, diamond, args.diamonds, args.slots) for _ in repeat]
        latencies = [bench_latency(store, LATENCY_STARTS, LATENCY_GAP) for _ in repeat]

    rows: list[tuple[str, str]] = []

    def rate(label: str, value: float, unit: str) -> None:
        rows.append((label, f"{value:>10,.0f} {unit:<8} {value / bare:>7.2f}x"))

    def processed(
        label: str, passes: list[Processed], steps: int = 1, unit: str = "runs/s"
    ) -> None:
        rate(f"{label}: spawn->done", median(p.runs * steps / p.from_spawn for p in passes), unit)
        rate(
            "     first step->done",
            median(p.runs * steps / p.from_first_call for p in passes),
            unit,
        )

    rate("(1a) starts, one by one (app.start)", median(s for s, _ in starts), "runs/s")
    rate(
        "(1b) starts, batched (app.start_many, 1000 per call)",
        median(b for _, b in starts),
        "runs/s",
    )
    processed(f"(2)  {args.runs:,} one-step runs, async step, {worker}", one)
    processed("(2') the same, sync `def` step", one_sync)
    processed(f"(3)  {args.diamonds:,} 4-step diamond runs, {worker}", diamonds)
    processed("(3') the same, in steps", diamonds, steps=4, unit="steps/s")
    pcts = ", ".join(
        f"p{pct} {median(percentile(p, pct) for p in latencies):.2f} ms" for pct in (50, 95, 99)
    )
    rows.append(
        (
            f"(4)  start-to-first-step latency, idle worker at defaults, "
            f"{LATENCY_STARTS} starts {LATENCY_GAP * 1000:g} ms apart",
            pcts,
        )
    )
    rate("(5)  bare SQL queue loop (reference)", bare, "jobs/s")
    width = max(len(label) for label, _ in rows)
    print(f"{'figure':<{width}} {'value':>10} {'unit':<8} {'vs (5)':>8}")
    for label, value in rows:
        print(f"{label:<{width}} {value}")
    print(flush=True)


def measure_telemetry(engine: str, args: argparse.Namespace) -> None:
    """(1a), (1b) and (2) with telemetry off and on, pass by pass, and the ratios."""
    with bench_store(engine) as store:
        print(
            f"== {engine}: {store.describe()}; cores: {os.cpu_count()}; telemetry off, then on; "
            f"passes per figure: {args.repeat} (median); wall clock"
            f"{'; QUICK counts' if args.quick else ''}",
            flush=True,
        )
        figures: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for _ in range(args.repeat):
            for telemetry in (False, True):
                single, batched = bench_starts(store, 2000, 20_000, 1000, telemetry)
                one = bench_processing(store, one_step, args.runs, args.slots, telemetry)
                figures[telemetry].append((single, batched, one.runs / one.from_spawn))
    labels = (
        "(1a) starts, one by one (app.start)",
        "(1b) starts, batched (app.start_many, 1000 per call)",
        f"(2)  {args.runs:,} one-step runs, async step: spawn->done",
    )
    width = max(len(label) for label in labels)
    print(f"{'figure':<{width}} {'off':>10} {'on':>10} {'on/off':>7}  (runs/s)")
    for index, label in enumerate(labels):
        off = median(f[index] for f in figures[False])
        on = median(f[index] for f in figures[True])
        print(f"{label:<{width}} {off:>10,.0f} {on:>10,.0f} {on / off:>7.2f}")
    print(flush=True)


def measure_limits(engine: str, args: argparse.Namespace) -> None:
    """(2) with no limit and with a step concurrency limit of 50, pass by pass, and the ratio."""
    with bench_store(engine) as store:
        print(
            f"== {engine}: {store.describe()}; cores: {os.cpu_count()}; no limit, then "
            f"concurrency={bench_flows.LIMITED_CONCURRENCY}; passes per figure: {args.repeat} "
            f"(median); wall clock{'; QUICK counts' if args.quick else ''}",
            flush=True,
        )
        figures: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for limited in (False, True):
                flow = one_step_limited if limited else one_step
                done = bench_processing(store, flow, args.runs, args.slots)
                figures[limited].append(done.runs / done.from_spawn)
    off, on = median(figures[False]), median(figures[True])
    label = f"(2)  {args.runs:,} one-step runs, async step: spawn->done"
    print(f"{'figure':<{len(label)}} {'no limit':>10} {'limit 50':>10} {'ratio':>7}  (runs/s)")
    print(f"{label} {off:>10,.0f} {on:>10,.0f} {on / off:>7.2f}")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10_000, help="one-step runs to process")
    parser.add_argument("--diamonds", type=int, default=1_000, help="4-step diamond runs")
    parser.add_argument(
        "--slots",
        type=int,
        help="run the worker with queues={'default': SLOTS} (default: the worker's defaults)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="passes per figure (median)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one pass")
    parser.add_argument(
        "--limits",
        action="store_true",
        help="only (2), each pass twice: with no limit, then with a step concurrency limit of "
        f"{bench_flows.LIMITED_CONCURRENCY}",
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="only (1) and (2), each with tracing and metrics off, then on (needs the otel and "
        "prometheus extras)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.slots is not None and args.slots < 1:
        parser.error("--slots must be at least 1")
    if args.quick:
        args.runs, args.diamonds, args.repeat = min(args.runs, 2000), min(args.diamonds, 200), 1
    for engine in ("postgres", "sqlite") if args.engine == "both" else (args.engine,):
        if args.limits:
            measure_limits(engine, args)
        else:
            (measure_telemetry if args.telemetry else measure)(engine, args)


def worker_main() -> None:
    """The worker process: what a user runs, at its defaults unless ``--slots``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("worker")
    add_arguments(parser)
    parser.add_argument("--slots", type=int, help="queues={'default': SLOTS} (default: none)")
    parser.add_argument("--telemetry", action="store_true", help="trace and measure it")
    args = parser.parse_args()
    PROBE.configure(args.first_call, args.calls)
    app = make_app(args.url, WORKFLOWS[args.job], args.telemetry)
    if args.slots is None:
        app.run_worker()
    else:
        app.run_worker({"default": args.slots})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main()
    else:
        main()
