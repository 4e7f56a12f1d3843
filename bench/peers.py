"""pypgflow side by side with PgQueuer, measured as a user sees each of them.

    make bench-peers                         # figures 1-7, 3 passes each: 5 to 10 minutes
    make bench-peers ARGS=--quick            # small counts, one pass: a smoke run, about 1 min
    make bench-peers ARGS='--only 3,6'       # a subset of the figures
    make bench-peers ARGS=--memory           # figures 1-8; 8 alone adds about 8 minutes
    make bench-peers ARGS='--repeat 5'       # more passes per figure

Each figure's duration is printed to stderr as it ends.

Why one module: it is one command, whose figures share one harness (databases, the two systems'
producer calls, worker processes, the poller); reading a figure means reading how the harness
measures it. What runs elsewhere is apart: each system's worker (bench/peers_pypgflow.py,
bench/peers_pgqueuer.py, so that each process imports only its own system) and the probe the
jobs share (bench/peers_probe.py).

``make bench-peers`` runs this file in its own virtualenv, .venv-bench, which has pypgflow
(editable) and pgqueuer[asyncpg,psycopg]==1.6.0: PgQueuer is no dependency of pypgflow.

How it measures
---------------
One harness for both systems. Every pass gets a database of its own on the PostgreSQL server at
PYPGFLOW_BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), created, given the system's schema
(``App.migrate``; PgQueuer's ``Queries.install`` then ``upgrade``) and dropped afterwards. This
process is the producer; workers are separate processes it spawns for each pass
(bench/peers_pypgflow.py, bench/peers_pgqueuer.py), each importing only its own system, as in
production. Every figure is wall-clock time as a user sees it: ``time.perf_counter()`` around
the producer's calls, ``time.time()`` at the spawn, in the job's first line and in the poller,
never a database timestamp (``now()`` is when a transaction began, not when it became visible).
The poller is one connection of the producer that asks every 15 ms whether any job is not done
yet (pypgflow: a run pending or running; PgQueuer: a row of its queue table queued or picked,
since a job's row leaves it when its completion is written; index-only scans, about 0.1 ms)
and, in the same statement, what pg_stat_activity shows of the workers' connections. Every
pass ends by checking that every job succeeded. Each figure is the median of ``--repeat``
passes (default 3), the two systems' passes interleaved (PgQueuer, pypgflow, PgQueuer,
pypgflow, ...). The ratio column is pypgflow / PgQueuer: above 1 is better for pypgflow for
rates, worse for latencies and memory.

Both systems run at their documented defaults unless a figure says otherwise. pypgflow's worker
is ``App(url).run_worker()``: queue "default" with 100 slots, async steps on the loop, sync steps
in a thread pool. PgQueuer's is a ``QueueManager`` run by ``pgqueuer.run``, i.e.
``QueueManager.run()`` defaults: batch_size=10 jobs per dequeue and no cap on concurrent jobs;
its completions are buffered and written in batches of batch_size or every ~0.1 s. Its driver is
``AsyncpgDriver`` on one asyncpg connection, for the worker and the producer alike: ``pgq`` tries
asyncpg first and falls back to psycopg, and PgQueuer's performance guide recommends asyncpg
(``--pgqueuer-driver psycopg`` measures ``PsycopgDriver`` instead: it listens with psycopg's
``AsyncConnection.notifies(timeout=1.0)``, which holds the connection's lock while it waits, so
every other statement of the worker queues behind it until a notification arrives or the second
is up: several times slower). Its event loop is uvloop, as ``pgq run`` picks it
(``--pgqueuer-loop asyncio`` for the standard loop). pypgflow's producer is its synchronous App.

The figures
-----------
1. batched start: 10,000 jobs enqueued in calls of 1,000 (PgQueuer ``enqueue`` with lists,
   pypgflow ``app.start_many``), per second, timed around the producer's calls (one warm-up
   enqueue first).
2. single start: 2,000 enqueues one call at a time (``enqueue(name, payload)``, ``app.start``).
3. processing at defaults: 10,000 one-step no-op jobs/runs enqueued, then one worker spawned.
   Per second from the spawn until the poller sees all done (start-up included), and from the
   first job call (its time written by the job) until then. 3a: async step; 3b: a plain ``def``
   step on pypgflow (PgQueuer jobs are async functions: its column repeats 3a).
4. processing, tuned: 4a pypgflow with 500 slots (``queues={"default": 500}``). PgQueuer has no
   slots: with no ``max_concurrent_tasks`` its concurrency is unbounded already, and what its
   docs tune for short jobs is ``batch_size`` (jobs per dequeue round trip, and the size of its
   completion batches): 4a uses ``batch_size=100``. 4b runs both 100 jobs at once at most:
   pypgflow's 100 slots (its default), PgQueuer's ``max_concurrent_tasks=100``, which its docs
   require to be at least 2 x batch_size, so ``batch_size=50``.
5. a four-step diamond (top -> left, right -> bottom) on pypgflow, 2,500 runs, in steps per
   second, against PgQueuer's figure 3a jobs per second: 10,000 steps against 10,000 jobs, so
   that both sides' start-up (timed from the spawn) weighs on the same amount of work.
6. start-to-first-step latency with an idle worker (at defaults, after one warm-up job): 200
   starts on a 10 ms grid; the producer notes ``time.time()`` just before each start call, the
   job at its first line; p50 / p95 / p99 in ms.
7. concurrency as the database sees it: figure 3a with one and with two worker processes
   (spawned together), per second; the workers' connections (peak, from pg_stat_activity); and
   how many of them are running a statement, on average over the poller's samples.
8. memory (``--memory``; about 8 minutes at full counts, mostly the 100,000-job passes
   of each system, at figure 3's rates): worker RSS (VmRSS) with 10,000 jobs in flight, each
   sleeping 5 s, all taken in one statement (pypgflow ``queues={"default": 10000}``; PgQueuer,
   unbounded already, ``batch_size=10000``: at its default of 10 it would need 1,000 dequeues,
   each of which may wait up to a second, as said above); and RSS at the start (idle, after one
   warm-up job), at the end of a 100,000-job pass of the no-op job at defaults, and at the end
   of a second one (the first grows a worker to its working set; a leak would grow it on).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from operator import attrgetter
from pathlib import Path
from typing import Protocol, TypeVar

import psycopg
from pgqueuer.queries import Queries
from psycopg import sql

import peers_pgqueuer
import peers_pypgflow
from bench_db import ADMIN_URL, admin, with_dbname
from pypgflow.app import App

BENCH = Path(__file__).resolve().parent
#: seconds between two looks of the poller
POLL_INTERVAL = 0.015
#: jobs per enqueue call when a pass fills the queue before its worker starts
FILL_BATCH = 1000
FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8")

T = TypeVar("T")


@dataclass(frozen=True)
class Counts:
    """How much work each figure does."""

    batched: int = 10_000
    batch: int = 1_000
    single: int = 2_000
    processing: int = 10_000
    diamonds: int = 2_500
    latency_starts: int = 200
    latency_gap: float = 0.010
    in_flight: int = 10_000
    nap: float = 5.0
    long_pass: int = 100_000


QUICK = Counts(
    batched=2_000,
    single=200,
    processing=1_000,
    diamonds=250,
    latency_starts=50,
    in_flight=1_000,
    nap=2.0,
    long_pass=10_000,
)


# -- databases ---------------------------------------------------------------------------------


@contextmanager
def fresh_database(side: Side) -> Iterator[str]:
    """A new database with ``side``'s schema installed, dropped afterwards."""
    name = f"peers_{side.name}_{uuid.uuid4().hex[:8]}"
    admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_dbname(ADMIN_URL, name)
        side.install(url)
        yield url
    finally:
        admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def describe_server() -> str:
    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('fsync'),"
            " current_setting('synchronous_commit')"
        ).fetchone()
    assert row is not None
    return f"PostgreSQL {row[0]}; fsync={row[1]}, synchronous_commit={row[2]}"


# -- the two systems ---------------------------------------------------------------------------


class Side(Protocol):
    """What the harness needs of a system: its schema, its producer calls, its worker, and SQL
    for the poller. Enqueue inputs are integers (sample numbers) or, for ``nap``, seconds."""

    name: str
    #: true while some job is not done, for the poller (cheap: it runs every POLL_INTERVAL)
    pending_sql: str
    #: jobs a worker holds right now
    in_flight_sql: str

    def install(self, url: str) -> None: ...

    def fill(self, url: str, job: str, values: Sequence[float]) -> None:
        """Enqueue one job per value, FILL_BATCH per call (untimed)."""

    def time_batched(self, url: str, count: int, batch: int) -> float:
        """Seconds spent in the producer's calls enqueueing ``count`` jobs ``batch`` per call."""

    def time_single(self, url: str, count: int) -> float:
        """Seconds spent in ``count`` single enqueue calls."""

    def timed_starts(
        self, url: str, count: int, gap: float, settle: Callable[[], None]
    ) -> dict[int, float]:
        """One warm-up job (sample -1), ``settle()``, then ``count`` single starts on a grid of
        ``gap`` seconds; returns the ``time.time()`` taken just before each start call."""

    def succeeded(self, url: str) -> int:
        """How many jobs completed successfully."""

    def worker_command(self, url: str, job: str, options: Sequence[str]) -> list[str]: ...


class Pypgflow:
    name = "pypgflow"
    # index-only scans of runs_status_created: about 0.1 ms with 10,000 runs waiting
    pending_sql = "SELECT EXISTS (SELECT FROM pypgflow.runs WHERE status IN ('pending', 'running'))"
    in_flight_sql = "SELECT count(*) FROM pypgflow.tasks WHERE status = 'running'"

    def install(self, url: str) -> None:
        with App(url) as app:
            app.migrate()

    def fill(self, url: str, job: str, values: Sequence[float]) -> None:
        flow = peers_pypgflow.WORKFLOWS[job]
        inputs = [peers_pypgflow.run_input(job, value) for value in values]
        with App(url, workflows=[flow]) as app:
            for offset in range(0, len(inputs), FILL_BATCH):
                app.start_many(flow, inputs[offset : offset + FILL_BATCH])

    def time_batched(self, url: str, count: int, batch: int) -> float:
        flow = peers_pypgflow.noop_async
        inputs = [{"i": i} for i in range(count)]
        with App(url, workflows=[flow]) as app:
            app.start(flow, {"i": -1})  # warm-up: the pool's connection, prepared statements
            started = time.perf_counter()
            for offset in range(0, count, batch):
                app.start_many(flow, inputs[offset : offset + batch])
            return time.perf_counter() - started

    def time_single(self, url: str, count: int) -> float:
        flow = peers_pypgflow.noop_async
        inputs = [{"i": i} for i in range(count)]
        with App(url, workflows=[flow]) as app:
            app.start(flow, {"i": -1})
            started = time.perf_counter()
            for item in inputs:
                app.start(flow, item)
            return time.perf_counter() - started

    def timed_starts(
        self, url: str, count: int, gap: float, settle: Callable[[], None]
    ) -> dict[int, float]:
        flow = peers_pypgflow.noop_async
        sent: dict[int, float] = {}
        with App(url, workflows=[flow]) as app:
            app.start(flow, {"i": -1})
            settle()
            due = time.perf_counter()
            for i in range(count):
                sent[i] = time.time()
                app.start(flow, {"i": i})
                due += gap
                time.sleep(max(0.0, due - time.perf_counter()))
        return sent

    def succeeded(self, url: str) -> int:
        return count(url, "SELECT count(*) FROM pypgflow.runs WHERE status = 'completed'")

    def worker_command(self, url: str, job: str, options: Sequence[str]) -> list[str]:
        script = str(BENCH / "peers_pypgflow.py")
        return [sys.executable, script, "--url", url, "--job", job, *options]


class PgQueuer:
    name = "pgqueuer"
    # a job's row leaves the table when its completion is written; these are index-only scans
    # of its partial indexes (queued, picked): about 0.1 ms with 10,000 jobs waiting
    pending_sql = (
        "SELECT EXISTS (SELECT FROM pgqueuer WHERE status = 'queued')"
        " OR EXISTS (SELECT FROM pgqueuer WHERE status = 'picked')"
    )
    in_flight_sql = "SELECT count(*) FROM pgqueuer WHERE status = 'picked'"

    def __init__(self, loop: str, driver: str) -> None:
        self.loop = loop
        self.driver = driver

    def install(self, url: str) -> None:
        async def install() -> None:
            async with peers_pgqueuer.connected(self.driver, url) as driver:
                queries = Queries(driver)
                await queries.install()
                await queries.upgrade()

        asyncio.run(install())

    def fill(self, url: str, job: str, values: Sequence[float]) -> None:
        payloads: list[bytes | None] = [peers_pgqueuer.payload(value) for value in values]

        async def fill() -> None:
            async with peers_pgqueuer.connected(self.driver, url) as driver:
                queries = Queries(driver)
                for offset in range(0, len(payloads), FILL_BATCH):
                    chunk = payloads[offset : offset + FILL_BATCH]
                    await queries.enqueue([job] * len(chunk), chunk, [0] * len(chunk))

        asyncio.run(fill())

    def time_batched(self, url: str, count: int, batch: int) -> float:
        payloads: list[bytes | None] = [peers_pgqueuer.payload(i) for i in range(count)]

        async def timed() -> float:
            async with peers_pgqueuer.connected(self.driver, url) as driver:
                queries = Queries(driver)
                await queries.enqueue("noop", peers_pgqueuer.payload(-1))  # warm-up
                started = time.perf_counter()
                for offset in range(0, count, batch):
                    chunk = payloads[offset : offset + batch]
                    await queries.enqueue(["noop"] * len(chunk), chunk, [0] * len(chunk))
                return time.perf_counter() - started

        return asyncio.run(timed())

    def time_single(self, url: str, count: int) -> float:
        payloads = [peers_pgqueuer.payload(i) for i in range(count)]

        async def timed() -> float:
            async with peers_pgqueuer.connected(self.driver, url) as driver:
                queries = Queries(driver)
                await queries.enqueue("noop", peers_pgqueuer.payload(-1))
                started = time.perf_counter()
                for item in payloads:
                    await queries.enqueue("noop", item)
                return time.perf_counter() - started

        return asyncio.run(timed())

    def timed_starts(
        self, url: str, count: int, gap: float, settle: Callable[[], None]
    ) -> dict[int, float]:
        async def timed() -> dict[int, float]:
            sent: dict[int, float] = {}
            async with peers_pgqueuer.connected(self.driver, url) as driver:
                queries = Queries(driver)
                await queries.enqueue("noop", peers_pgqueuer.payload(-1))
                settle()  # blocks this loop, which has nothing else to do meanwhile
                due = time.perf_counter()
                for i in range(count):
                    sent[i] = time.time()
                    await queries.enqueue("noop", peers_pgqueuer.payload(i))
                    due += gap
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
            return sent

        return asyncio.run(timed())

    def succeeded(self, url: str) -> int:
        return count(url, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")

    def worker_command(self, url: str, job: str, options: Sequence[str]) -> list[str]:
        script = str(BENCH / "peers_pgqueuer.py")
        command = [sys.executable, script, "--url", url, "--job", job]
        return [*command, "--loop", self.loop, "--driver", self.driver, *options]


def count(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# -- workers and the poller --------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One processing pass: ``jobs`` jobs of ``job`` enqueued, then ``workers`` worker
    processes spawned with ``options`` (none: the system's defaults)."""

    system: str
    job: str
    jobs: int
    workers: int = 1
    options: tuple[str, ...] = ()


@dataclass
class Workers:
    """Worker processes of one pass, and what they tell the producer."""

    processes: list[subprocess.Popen[bytes]]
    spawned_at: float
    first_call_files: list[Path]
    stderr_files: list[Path]

    def first_call(self) -> float:
        times = [float(f.read_text()) for f in self.first_call_files if f.exists()]
        if not times:
            raise RuntimeError("no worker recorded a first job call")
        return min(times)

    def rss_kib(self) -> int:
        """The workers' resident memory (VmRSS), summed, in KiB."""
        total = 0
        for process in self.processes:
            status = Path(f"/proc/{process.pid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
            total += int(line.split()[1])
        return total

    def check_alive(self) -> None:
        for process, stderr in zip(self.processes, self.stderr_files, strict=True):
            if process.poll() is not None:
                tail = stderr.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"a worker exited with {process.returncode}:\n{tail}")


@contextmanager
def spawn_workers(
    side: Side,
    url: str,
    workload: Workload,
    directory: Path,
    *,
    calls: Path | None = None,
) -> Iterator[Workers]:
    """Start the workload's worker processes; stop them with SIGTERM (graceful) at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    firsts = [directory / f"first-call-{n}" for n in range(workload.workers)]
    stderrs = [directory / f"stderr-{n}" for n in range(workload.workers)]
    spawned_at = time.time()
    try:
        for first, stderr in zip(firsts, stderrs, strict=True):
            probe = ["--first-call", str(first)]
            if calls is not None:
                probe += ["--calls", str(calls)]
            command = side.worker_command(url, workload.job, [*workload.options, *probe])
            with stderr.open("wb") as err:
                processes.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=BENCH)
                )
        yield Workers(processes, spawned_at, firsts, stderrs)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process, stderr in zip(processes, stderrs, strict=False):  # all, if all started
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.returncode not in (0, -signal.SIGTERM):
                tail = stderr.read_text(errors="replace")[-3000:]
                sys.stderr.write(f"{side.name} worker exited with {process.returncode}:\n{tail}\n")


@dataclass
class Watched:
    """What the poller saw of one pass."""

    done_at: float
    #: the most connections the workers held at once (pg_stat_activity, this database)
    peak_connections: int
    #: of those, how many were running a statement, on average over the samples
    mean_active: float
    #: the most jobs held at once (only with ``in_flight``), and the workers' RSS then (KiB)
    peak_in_flight: int = 0
    rss_at_peak_kib: int = 0


def watch(
    side: Side, url: str, workers: Workers, timeout: float, *, in_flight: bool = False
) -> Watched:
    """Poll every POLL_INTERVAL until no job is left to do; one cheap statement per look."""
    flight = f"({side.in_flight_sql})" if in_flight else "0"
    query = (
        f"SELECT ({side.pending_sql}), {flight}, count(*),"
        " count(*) FILTER (WHERE state = 'active')"
        " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    peak_connections = 0
    active: list[int] = []
    peak_flight = rss_at_peak = 0
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(query).fetchone()
            seen_at = time.time()
            assert row is not None
            pending = bool(row[0])
            held, connections, running = (int(x) for x in row[1:])
            peak_connections = max(peak_connections, connections)
            active.append(running)
            if in_flight and held >= peak_flight and held > 0:
                rss = workers.rss_kib()
                rss_at_peak = rss if held > peak_flight else max(rss, rss_at_peak)
                peak_flight = held
            if not pending:
                return Watched(
                    seen_at, peak_connections, statistics.fmean(active), peak_flight, rss_at_peak
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{side.name}: jobs still not done after {timeout} s")
            workers.check_alive()
            time.sleep(POLL_INTERVAL)


def check_all_succeeded(side: Side, url: str, expected: int) -> None:
    done = side.succeeded(url)
    if done != expected:
        raise RuntimeError(f"{side.name}: {done} jobs succeeded, expected {expected}")


# -- passes ------------------------------------------------------------------------------------


@dataclass
class Processed:
    """One processing pass, in the producer's wall-clock seconds."""

    jobs: int
    from_spawn: float
    from_first_call: float
    peak_connections: int
    mean_active: float


def processing_pass(side: Side, workload: Workload) -> Processed:
    """Enqueue the jobs, spawn the workers, and time until the poller sees them all done."""
    with fresh_database(side) as url, tempfile.TemporaryDirectory() as tmp:
        side.fill(url, workload.job, range(workload.jobs))
        with spawn_workers(side, url, workload, Path(tmp)) as workers:
            seen = watch(side, url, workers, timeout=max(120.0, workload.jobs / 100))
            first_call = workers.first_call()
        check_all_succeeded(side, url, workload.jobs)
    return Processed(
        jobs=workload.jobs,
        from_spawn=seen.done_at - workers.spawned_at,
        from_first_call=seen.done_at - first_call,
        peak_connections=seen.peak_connections,
        mean_active=seen.mean_active,
    )


def wait_idle(side: Side, url: str, workers: Workers) -> None:
    """Wait until the warm-up job enqueued just before is done, then let the worker go idle."""
    watch(side, url, workers, timeout=60)
    time.sleep(0.5)


def latency_pass(side: Side, counts: Counts) -> list[float]:
    """Start-to-first-call latencies in ms, sorted."""
    with fresh_database(side) as url, tempfile.TemporaryDirectory() as tmp:
        calls = Path(tmp) / "calls"
        workload = Workload(side.name, "noop", counts.latency_starts)
        with spawn_workers(side, url, workload, Path(tmp), calls=calls) as workers:
            settle = functools.partial(wait_idle, side, url, workers)
            sent = side.timed_starts(url, counts.latency_starts, counts.latency_gap, settle)
            watch(side, url, workers, timeout=60)
        check_all_succeeded(side, url, counts.latency_starts + 1)
        received: dict[int, float] = {}
        for line in calls.read_text().splitlines():
            sample, at = line.split()
            received.setdefault(int(sample), float(at))
    return sorted((received[i] - at) * 1000 for i, at in sent.items())


def in_flight_pass(side: Side, counts: Counts) -> tuple[int, int]:
    """Jobs that sleep, all at once: (most held at once, the worker's RSS then in KiB)."""
    # Both take all the jobs in one statement (see figure 8 in the module's docstring).
    option = "--slots" if side.name == "pypgflow" else "--batch-size"
    options = (option, str(counts.in_flight))
    workload = Workload(side.name, "nap", counts.in_flight, options=options)
    with fresh_database(side) as url, tempfile.TemporaryDirectory() as tmp:
        side.fill(url, "nap", [counts.nap] * counts.in_flight)
        with spawn_workers(side, url, workload, Path(tmp)) as workers:
            seen = watch(side, url, workers, timeout=120 + 2 * counts.nap, in_flight=True)
        check_all_succeeded(side, url, counts.in_flight)
    return seen.peak_in_flight, seen.rss_at_peak_kib


def long_pass(side: Side, counts: Counts) -> tuple[int, int, int]:
    """The idle worker's RSS after one warm-up job, after ``long_pass`` more, and after as many
    again (KiB): a first pass grows a worker to its working set, a leak grows it on."""
    workload = Workload(side.name, "noop", counts.long_pass)
    with fresh_database(side) as url, tempfile.TemporaryDirectory() as tmp:
        with spawn_workers(side, url, workload, Path(tmp)) as workers:
            side.fill(url, "noop", [-1])
            wait_idle(side, url, workers)
            seen = [workers.rss_kib()]
            for first in (0, counts.long_pass):
                side.fill(url, "noop", range(first, first + counts.long_pass))
                watch(side, url, workers, timeout=max(300.0, counts.long_pass / 100))
                seen.append(workers.rss_kib())
        check_all_succeeded(side, url, 2 * counts.long_pass + 1)
    return seen[0], seen[1], seen[2]


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a figure, PgQueuer's value, pypgflow's value."""

    label: str
    pgqueuer: float
    pypgflow: float
    unit: str  # "/s", "ms", "MiB", "" (a count)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    index = min(len(values) - 1, max(0, round(pct / 100 * (len(values) - 1))))
    return values[index]


class Bench:
    """Runs the figures' passes, interleaving the systems, and keeps processing passes so that
    a figure reusing another's workload (5 and 7 reuse 3a) does not measure it again."""

    def __init__(self, counts: Counts, repeat: int, pgqueuer: PgQueuer) -> None:
        self.counts = counts
        self.repeat = repeat
        self.sides: dict[str, Side] = {"pgqueuer": pgqueuer, "pypgflow": Pypgflow()}
        self.pgqueuer = self.sides["pgqueuer"]
        self.pypgflow = self.sides["pypgflow"]
        self.processed: dict[Workload, list[Processed]] = {}

    def interleaved(self, *passes: Callable[[], T]) -> list[list[T]]:
        """``repeat`` rounds of every pass in turn: A, B, A, B, ..."""
        results: list[list[T]] = [[] for _ in passes]
        for _ in range(self.repeat):
            for run, found in zip(passes, results, strict=True):
                found.append(run())
        return results

    def processing(self, *workloads: Workload) -> list[list[Processed]]:
        """The passes of each workload, measuring (interleaved) those not measured yet."""
        missing = [w for w in workloads if w not in self.processed]
        for _ in range(self.repeat):
            for workload in missing:
                side = self.sides[workload.system]
                self.processed.setdefault(workload, []).append(processing_pass(side, workload))
        return [self.processed[w] for w in workloads]

    def default_noop(self, system: str, workers: int = 1) -> Workload:
        return Workload(system, "noop", self.counts.processing, workers)

    # -- one method per figure: each returns its rows ----------------------------------------

    def figure_1(self) -> list[Row]:
        c = self.counts
        pgq, pyp = self.interleaved(
            lambda: c.batched / self.time_start(self.pgqueuer, batched=True),
            lambda: c.batched / self.time_start(self.pypgflow, batched=True),
        )
        label = (
            f"1  batched start: {c.batched:,} in calls of {c.batch:,} (enqueue list | start_many)"
        )
        return [Row(label, median(pgq), median(pyp), "/s")]

    def figure_2(self) -> list[Row]:
        c = self.counts
        pgq, pyp = self.interleaved(
            lambda: c.single / self.time_start(self.pgqueuer, batched=False),
            lambda: c.single / self.time_start(self.pypgflow, batched=False),
        )
        label = f"2  single start: {c.single:,} calls (enqueue | start)"
        return [Row(label, median(pgq), median(pyp), "/s")]

    def time_start(self, side: Side, *, batched: bool) -> float:
        c = self.counts
        with fresh_database(side) as url:
            if batched:
                return side.time_batched(url, c.batched, c.batch)
            return side.time_single(url, c.single)

    def figure_3(self) -> list[Row]:
        n = self.counts.processing
        pgq, pyp, pyp_sync = self.processing(
            self.default_noop("pgqueuer"),
            self.default_noop("pypgflow"),
            Workload("pypgflow", "noop-sync", n),
        )
        return [
            *rate_rows(f"3a {n:,} no-op jobs, 1 worker at defaults, async", pgq, pyp),
            *rate_rows("3b the same, pypgflow `def` step (PgQueuer: 3a)", pgq, pyp_sync),
        ]

    def figure_4(self) -> list[Row]:
        n = self.counts.processing
        batch_100 = Workload("pgqueuer", "noop", n, options=("--batch-size", "100"))
        capped = Workload(
            "pgqueuer", "noop", n, options=("--batch-size", "50", "--max-concurrent-tasks", "100")
        )
        slots_500 = Workload("pypgflow", "noop", n, options=("--slots", "500"))
        slots_100 = Workload("pypgflow", "noop", n, options=("--slots", "100"))
        pgq, pyp, pgq_capped, pyp_100 = self.processing(batch_100, slots_500, capped, slots_100)
        return [
            *rate_rows(f"4a {n:,} jobs, tuned: 500 slots | PgQueuer batch_size=100", pgq, pyp),
            *rate_rows(
                "4b 100 at once: 100 slots | batch_size=50, max_concurrent_tasks=100",
                pgq_capped,
                pyp_100,
            ),
        ]

    def figure_5(self) -> list[Row]:
        n = self.counts.diamonds
        pgq, pyp = self.processing(
            self.default_noop("pgqueuer"), Workload("pypgflow", "diamond", n)
        )
        label = f"5  {n:,} diamond runs, steps/s | PgQueuer: 3a jobs/s"
        return rate_rows(label, pgq, pyp, steps_per_job=(1, 4))

    def figure_6(self) -> list[Row]:
        pgq, pyp = self.interleaved(
            lambda: latency_pass(self.pgqueuer, self.counts),
            lambda: latency_pass(self.pypgflow, self.counts),
        )
        n = self.counts.latency_starts
        gap = self.counts.latency_gap * 1000
        rows = []
        for pct in (50, 95, 99):
            rows.append(
                Row(
                    f"6  start-to-first-call, idle worker, {n} starts {gap:g} ms apart: p{pct}",
                    median([percentile(p, pct) for p in pgq]),
                    median([percentile(p, pct) for p in pyp]),
                    "ms",
                )
            )
        return rows

    def figure_7(self) -> list[Row]:
        pgq_1, pyp_1, pgq_2, pyp_2 = self.processing(
            self.default_noop("pgqueuer"),
            self.default_noop("pypgflow"),
            self.default_noop("pgqueuer", workers=2),
            self.default_noop("pypgflow", workers=2),
        )
        n = self.counts.processing
        both = (("1 worker", pgq_1, pyp_1), ("2 workers", pgq_2, pyp_2))
        return [
            *rate_rows(f"7a {n:,} jobs as 3a, 1 worker process", pgq_1, pyp_1),
            *rate_rows("7b the same, 2 worker processes", pgq_2, pyp_2),
            *(
                Row(
                    f"7c connections held, peak: {workers}",
                    median([p.peak_connections for p in pgq]),
                    median([p.peak_connections for p in pyp]),
                    "",
                )
                for workers, pgq, pyp in both
            ),
            *(
                Row(
                    f"7d connections running a statement, mean: {workers}",
                    median([p.mean_active for p in pgq]),
                    median([p.mean_active for p in pyp]),
                    "",
                )
                for workers, pgq, pyp in both
            ),
        ]

    def figure_8(self) -> list[Row]:
        c = self.counts
        flights = self.interleaved(
            lambda: in_flight_pass(self.pgqueuer, c), lambda: in_flight_pass(self.pypgflow, c)
        )
        for side, passes in zip(("PgQueuer", "pypgflow"), flights, strict=True):
            reached = min(held for held, _ in passes)
            if reached < c.in_flight:
                print(f"note: {side} held at most {reached:,} of {c.in_flight:,} jobs at once")
        longs = self.interleaved(
            lambda: long_pass(self.pgqueuer, c), lambda: long_pass(self.pypgflow, c)
        )

        def mib(passes: Sequence[tuple[int, ...]], index: int) -> float:
            return median([p[index] / 1024 for p in passes])

        pgq_flight, pyp_flight = flights
        pgq_long, pyp_long = longs
        return [
            Row(
                f"8a worker RSS, {c.in_flight:,} jobs in flight ({c.nap:g} s sleeps; "
                f"{c.in_flight:,} slots | batch_size={c.in_flight:,})",
                mib(pgq_flight, 1),
                mib(pyp_flight, 1),
                "MiB",
            ),
            Row(
                f"8b worker RSS, idle, before a {c.long_pass:,}-job pass",
                mib(pgq_long, 0),
                mib(pyp_long, 0),
                "MiB",
            ),
            Row("8c worker RSS, after it", mib(pgq_long, 1), mib(pyp_long, 1), "MiB"),
            Row("8d worker RSS, after a second one", mib(pgq_long, 2), mib(pyp_long, 2), "MiB"),
        ]


def rate_rows(
    label: str,
    pgq: list[Processed],
    pyp: list[Processed],
    *,
    steps_per_job: tuple[int, int] = (1, 1),
) -> list[Row]:
    """Two rows: per second from the spawn, and from the first job call, until all done."""

    def rate(passes: list[Processed], seconds: Callable[[Processed], float], steps: int) -> float:
        return median([p.jobs * steps / seconds(p) for p in passes])

    spawn, first = attrgetter("from_spawn"), attrgetter("from_first_call")
    pgq_steps, pyp_steps = steps_per_job
    return [
        Row(
            f"{label}, spawn->done",
            rate(pgq, spawn, pgq_steps),
            rate(pyp, spawn, pyp_steps),
            "/s",
        ),
        Row("   first call->done", rate(pgq, first, pgq_steps), rate(pyp, first, pyp_steps), "/s"),
    ]


# -- output ------------------------------------------------------------------------------------


def cell(value: float, unit: str) -> str:
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def print_table(rows: list[Row]) -> None:
    width = max([len(r.label) for r in rows] + [6])
    print(f"{'figure':<{width}} | {'PgQueuer':>13} | {'pypgflow':>13} | {'ratio':>6}")
    print(f"{'-' * width}-|-{'-' * 13}-|-{'-' * 13}-|-{'-' * 6}")
    for row in rows:
        ratio = f"{row.pypgflow / row.pgqueuer:.2f}" if row.pgqueuer else "-"
        print(
            f"{row.label:<{width}} | {cell(row.pgqueuer, row.unit):>13} | "
            f"{cell(row.pypgflow, row.unit):>13} | {ratio:>6}"
        )


def selected_figures(only: str | None, memory: bool) -> list[str]:
    if only is None:
        return [f for f in FIGURES if f != "8" or memory]
    chosen = [f.strip() for f in only.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FIGURES]
    if unknown:
        raise SystemExit(f"--only: unknown figure(s) {', '.join(unknown)} (1 to 8)")
    return [f for f in FIGURES if f in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="passes per figure (median)")
    parser.add_argument("--quick", action="store_true", help="small counts, one pass")
    parser.add_argument("--only", metavar="FIGURE[,FIGURE]", help="run these figures (1-8)")
    parser.add_argument("--memory", action="store_true", help="also figure 8 (long)")
    parser.add_argument(
        "--pgqueuer-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="the PgQueuer worker's event loop (default: uvloop, as `pgq run`)",
    )
    parser.add_argument(
        "--pgqueuer-driver",
        choices=["psycopg", "asyncpg"],
        default="asyncpg",
        help="the driver of PgQueuer's worker and producer (default asyncpg, as `pgq` picks it)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    counts = QUICK if args.quick else Counts()
    repeat = 1 if args.quick else args.repeat
    figures = selected_figures(args.only, args.memory)
    bench = Bench(counts, repeat, PgQueuer(args.pgqueuer_loop, args.pgqueuer_driver))
    print(
        f"== {describe_server()}; {os.cpu_count()} cores; {repeat} pass(es) per figure (median), "
        f"PgQueuer and pypgflow interleaved\n"
        f"== PgQueuer {version('pgqueuer')} (worker: {args.pgqueuer_driver} driver, "
        f"{args.pgqueuer_loop} loop), "
        f"pypgflow {version('pypgflow')}, Python {platform.python_version()}"
        f"{'; QUICK counts' if args.quick else ''}; ratio = pypgflow / PgQueuer",
        flush=True,
    )
    measure = {
        "1": bench.figure_1, "2": bench.figure_2, "3": bench.figure_3, "4": bench.figure_4,
        "5": bench.figure_5, "6": bench.figure_6, "7": bench.figure_7, "8": bench.figure_8,
    }  # fmt: skip
    rows: list[Row] = []
    for figure in figures:
        started = time.monotonic()
        rows += measure[figure]()
        print(
            f"   figure {figure}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True
        )
    print_table(rows)


if __name__ == "__main__":
    main()
