"""Scale benchmark: the hot path and the listings beside a large history of finished runs.

    python bench/scale.py                       # 1,000,000 finished runs (the default)
    python bench/scale.py --finished 100000     # a quicker pass

Two PostgreSQL databases, each beside a backlog of 10,000 pending one-step runs started with
``app.start_many`` (1% of them fail, at their only attempt): an empty one, and one holding N
finished one-step runs, loaded in SQL (generate_series, batches of 100,000) shaped as the engine
stores them: a run, its step and its task, completed (1% failed after three attempts), created
before the backlog. Each database is then given ``VACUUM ANALYZE``, what autovacuum would have
done by then (a test server may run with it off; ``--analyze before-backlog`` runs it before the
backlog is started instead, so that the statistics say no run is pending), and measured:

- throughput: a worker process (separate, as in production, its leader's retention included)
  drains the backlog; runs per second from its first claim (timed in the worker) to the last
  completion seen by a poller. A drain takes a second or two, so each database is drained
  ``--passes`` times (5), a new backlog each time, the two databases' passes interleaved (the
  empty database a new one at each pass), and the figures are medians;
- claim latency: p50 of the worker's claims that claimed something, timed in the worker (and of
  its outcome batches, finish_tasks), the median over the passes;
- list_runs latency, p50 and p95 over repeated calls: no filter, by status (common and rare),
  by workflow, by both;
- retention, last: the engine's prune_runs (what the leader calls, at its default batch) deletes
  the oldest day of the history (``--prune-hours``; at most its older half), batch after batch: runs per second, the
  longest batch (the longest any run lock is held), and the tables' size before, after, after
  the VACUUM that autovacuum would run, and once as many new runs are started (the space of
  deleted rows is reused, not grown).

Every figure is printed for both databases, with the ratio of the loaded one to the empty one.
PostgreSQL at PYPGFLOW_BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), in databases the
benchmark creates and drops.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from bench_db import ADMIN_URL, database
from pypgflow import RunStatus, Workflow, defaults
from pypgflow.app import App

BATCH = 100_000

one_step = Workflow("bench_scale")


@one_step.step(max_attempts=1)
async def noop(input: Any) -> Any:
    if input["i"] % 100 == 99:  # one run in a hundred fails, as in the history
        raise ValueError("no good")
    return input


# -- the history, in SQL ---------------------------------------------------------------------------

#: N finished runs, as the engine leaves them: the run (its steps in its row) and its task (the
#: step's output on it). Run n is created 50 ms after run n - 1, all before the backlog, with a
#: UUIDv7 id of its creation time (as the engine makes them); one in a hundred failed after its
#: third attempt (every attempt's error on the task, the last one without its traceback on the
#: run).
LOAD_SQL = """
WITH r AS (
    INSERT INTO pypgflow.runs
        (id, workflow, status, queue, priority, input, output, error, remaining_steps,
         created_at, scheduled_at, started_at, finished_at, steps)
    SELECT (lpad(to_hex((extract(epoch FROM f.created) * 1000)::bigint), 12, '0') || '7'
            || lpad(to_hex(n %% 4096), 3, '0') || '8' || lpad(to_hex(n), 15, '0'))::uuid,
           %(workflow)s, f.status, 'default', 0, jsonb_build_object('i', n),
           CASE WHEN NOT f.failed THEN jsonb_build_object('i', n) END,
           CASE WHEN f.failed THEN jsonb_build_object(
               'step', 'noop', 'type', 'ValueError', 'attempt', 3, 'message', 'no good',
               'traceback', '', 'task_index', NULL, 'instance_id', 'bench') END,
           CASE WHEN f.failed THEN 1 ELSE 0 END,
           f.created, f.created, f.created + interval '20 ms', f.created + interval '25 ms',
           jsonb_build_object('noop', jsonb_build_object(
               'position', 0, 'status', f.status, 'depends_on', '[]'::jsonb,
               'remaining_deps', 0, 'max_attempts', 3,
               'remaining_tasks', CASE WHEN f.failed THEN 1 ELSE 0 END, 'task_count', 1))
    FROM generate_series(%(first)s::int, %(last)s::int) AS n,
         LATERAL (SELECT mod(n, 100) = 99 AS failed,
                         CASE WHEN mod(n, 100) = 99 THEN 'failed' ELSE 'completed' END AS status,
                         %(start)s::timestamptz + n * interval '50 ms' AS created) AS f
    RETURNING id, status, output, error, created_at, started_at, finished_at
)
INSERT INTO pypgflow.tasks
    (run_id, step, task_index, workflow, queue, priority, status, run_at, attempt, max_attempts,
     input, output, errors, instance_id, rescues, created_at, started_at, finished_at)
SELECT id, 'noop', NULL, %(workflow)s, 'default', 0, status, created_at,
       CASE WHEN status = 'failed' THEN 3 ELSE 1 END, 3, NULL, output,
       CASE WHEN status = 'failed'
            THEN jsonb_build_array(
                error || jsonb_build_object('attempt', 1, 'traceback', %(traceback)s::text),
                error || jsonb_build_object('attempt', 2, 'traceback', %(traceback)s::text),
                error || jsonb_build_object('traceback', %(traceback)s::text))
            ELSE '[]' END,
       'bench', 0, created_at, started_at, finished_at
FROM r
"""


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "flows.py", line 12, in noop\n'
    "    raise ValueError('no good')\n"
    "ValueError: no good\n"
)


def load_history(url: str, finished: int) -> float:
    """Load ``finished`` runs; the seconds it took."""
    started = time.perf_counter()
    start = time.time() - finished * 0.05 - 60  # the last one a minute before the backlog
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, finished, BATCH):
            conn.execute(
                LOAD_SQL,  # type: ignore[arg-type]
                {
                    "workflow": one_step.name,
                    "first": first,
                    "last": min(finished, first + BATCH) - 1,
                    "start": _timestamp(start),
                    "traceback": TRACEBACK,
                },
            )
            print(f"   loaded {min(finished, first + BATCH):,} finished runs", flush=True)
    return time.perf_counter() - started


def _timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(epoch))


def vacuum_analyze(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE pypgflow.runs, pypgflow.tasks")
    return time.perf_counter() - started


# -- the worker process ----------------------------------------------------------------------------


@contextmanager
def worker_process(url: str, slots: int, report: str) -> Iterator[subprocess.Popen[bytes]]:
    """The worker, its log in a file beside ``report`` (a pipe left unread would block it)."""
    command = [
        sys.executable, __file__, "worker", "--url", url, "--slots", str(slots),
        "--report", report,
    ]  # fmt: skip
    with open(report + ".log", "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode not in (0, -signal.SIGTERM):
            with open(report + ".log", "rb") as log:
                sys.stderr.write(log.read().decode(errors="replace")[-3000:])


def worker_main() -> None:
    """A worker that times its engine's claims and outcome batches, and writes them to
    ``--report`` when it stops: ``{"claims": [[wall clock, seconds, tasks], ...], ...}``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()
    app = App(args.url, workflows=[one_step])
    engine: Any = app.engine
    timings: dict[str, list[tuple[float, float, int]]] = {"claims": [], "finishes": []}

    def timed(name: str, verb: Callable[..., Any], size: Callable[[Any, Any], int]) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            wall, started = time.time(), time.perf_counter()
            result = verb(*args, **kwargs)
            timings[name].append((wall, time.perf_counter() - started, size(args, result)))
            return result

        return call

    engine.claim_tasks = timed("claims", engine.claim_tasks, lambda args, result: len(result))
    engine.finish_tasks = timed("finishes", engine.finish_tasks, lambda args, result: len(args[0]))
    try:
        app.run_worker({"default": args.slots})
    finally:
        with open(args.report, "w") as out:
            json.dump(timings, out)
        app.close()


# -- measuring -------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def drain(url: str, backlog: int, slots: int) -> dict[str, float]:
    """A worker process drains the backlog: throughput, and its claims' and batches' p50."""
    with tempfile.TemporaryDirectory(prefix="pypgflow-scale-") as directory:
        report = os.path.join(directory, "timings.json")
        with psycopg.connect(url, autocommit=True) as poller, worker_process(url, slots, report):
            timeout = max(120.0, backlog / 20)
            deadline = time.monotonic() + timeout
            while True:  # the last completion, as a poller sees it
                row = poller.execute(
                    "SELECT EXISTS (SELECT 1 FROM pypgflow.runs WHERE status = 'pending')"
                    " OR EXISTS (SELECT 1 FROM pypgflow.runs WHERE status = 'running')"
                ).fetchone()
                if row is not None and not row[0]:
                    done = time.time()
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the backlog was not drained within {timeout:.0f} s")
                time.sleep(0.005)
        with open(report) as timings_file:
            timings = json.load(timings_file)
    claims = [(wall, seconds) for wall, seconds, count in timings["claims"] if count]
    finishes = [seconds for _, seconds, _ in timings["finishes"]]
    first_claim = min(wall for wall, _ in claims)
    return {
        "throughput": backlog / (done - first_claim),
        "claim_p50": percentile([seconds for _, seconds in claims], 50) * 1000,
        "finish_p50": percentile(finishes, 50) * 1000,
        "claims": len(claims),
    }


LISTINGS: list[tuple[str, dict[str, Any]]] = [
    ("no filter", {}),
    ("status=completed", {"status": RunStatus.COMPLETED}),
    ("status=failed", {"status": RunStatus.FAILED}),
    ("workflow", {"workflow": one_step.name}),
    ("status=failed, workflow", {"status": RunStatus.FAILED, "workflow": one_step.name}),
]


def list_latencies(app: App, calls: int) -> dict[str, tuple[float, float]]:
    """p50 and p95 (ms) of app.list_runs() (50 runs, the default limit) for each listing."""
    found = {}
    for label, filters in LISTINGS:
        for _ in range(5):
            app.list_runs(**filters)
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            app.list_runs(**filters)
            seconds.append(time.perf_counter() - started)
        found[label] = (percentile(seconds, 50) * 1000, percentile(seconds, 95) * 1000)
    return found


def start_backlog(url: str, args: argparse.Namespace) -> None:
    """The backlog, and the VACUUM ANALYZE autovacuum would run with it there (or before it,
    ``--analyze before-backlog``)."""
    if args.analyze == "before-backlog":
        vacuum_analyze(url)
    with App(url, workflows=[one_step]) as app:
        for offset in range(0, args.backlog, 1000):
            app.start_many(one_step, [{"i": i} for i in range(offset, offset + 1000)])
    if args.analyze == "with-backlog":
        vacuum_analyze(url)


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures of an empty database and of one holding the history (its ``--passes``
    drains interleaved with the empty one's, each of a fresh backlog; the empty database is a
    new one at every pass), listings, then the loaded one's retention."""
    when = "with the backlog there" if args.analyze == "with-backlog" else "before the backlog"
    print(f"   VACUUM ANALYZE runs, tasks {when}, as autovacuum would have by then")
    with database("pypgflow_scale") as url:
        App(url).migrate()
        seconds = load_history(url, args.finished)
        print(f"   loading took {seconds:.1f} s ({args.finished / seconds:,.0f} runs/s)")
        drains: dict[str, list[dict[str, float]]] = {"empty": [], "loaded": []}
        for number in range(1, args.passes + 1):
            with database("pypgflow_scale_empty") as empty_url:
                App(empty_url).migrate()
                for side, side_url in (("empty", empty_url), ("loaded", url)):
                    start_backlog(side_url, args)
                    drains[side].append(drain(side_url, args.backlog, args.slots))
                    print(
                        f"   pass {number}, {side}: {drains[side][-1]['throughput']:,.0f} runs/s",
                        flush=True,
                    )
                if number == args.passes:
                    with App(empty_url, workflows=[one_step]) as app:
                        empty = {"lists": list_latencies(app, args.list_calls)}
        with App(url, workflows=[one_step]) as app:
            loaded = {"lists": list_latencies(app, args.list_calls)}
        loaded["prune"] = prune_history(url, args.finished, args.prune_hours)
    for side, figures in (("empty", empty), ("loaded", loaded)):
        for key in ("throughput", "claim_p50", "finish_p50"):
            figures[key] = statistics.median(d[key] for d in drains[side])
    return empty, loaded


def table_sizes(url: str) -> int:
    """Bytes of runs and tasks with their indexes."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('pypgflow.runs') + pg_total_relation_size('pypgflow.tasks')"
        ).fetchone()
    assert row is not None
    return int(row[0])


def prune_history(url: str, finished: int, hours: float) -> dict[str, float]:
    """The oldest ``hours`` of the history (at most its older half) pruned by the engine,
    batch by batch, as the leader's retention does it (without its pauses): rate, longest
    batch, sizes."""
    app = App(url)
    engine: Any = app.engine
    # Runs are created 50 ms apart: the cutoff after the oldest ``hours`` of them.
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - min(created_at)) FROM pypgflow.runs"
        ).fetchone()
    assert row is not None
    span = finished * 0.05
    pruned_span = min(hours * 3600, span / 2)
    age = float(row[0]) - pruned_span
    before = table_sizes(url)
    with psycopg.connect(url, autocommit=True) as conn:
        counted = conn.execute("SELECT count(*) FROM pypgflow.runs").fetchone()
    assert counted is not None
    rows = int(counted[0])
    batches: list[float] = []
    pruned = 0
    started = time.perf_counter()
    position = None
    while True:  # as the leader's pass: until a batch is not full
        batch_started = time.perf_counter()
        count, position = engine.prune_runs(
            completed_before=age, failed_before=age, batch=defaults.PRUNE_BATCH, after=position
        )
        batches.append(time.perf_counter() - batch_started)
        pruned += count
        if count < defaults.PRUNE_BATCH:
            break
    seconds = time.perf_counter() - started
    app.close()
    after = table_sizes(url)
    vacuum_analyze(url)
    vacuumed = table_sizes(url)
    with App(url, workflows=[one_step]) as refill:  # as many new runs as were pruned
        for offset in range(0, pruned, 1000):
            refill.start_many(one_step, [{"i": i} for i in range(min(1000, pruned - offset))])
    refilled = table_sizes(url)
    print(
        f"   pruned {pruned:,} runs in {seconds:.1f} s ({len(batches)} batches of "
        f"{defaults.PRUNE_BATCH:,})",
        flush=True,
    )
    return {
        "pruned": pruned,
        "rate": pruned / seconds,
        "batch_p50": percentile(batches, 50) * 1000,
        "batch_max": max(batches) * 1000,
        "size_before": before / 2**20,
        "size_after": after / 2**20,
        "size_vacuumed": vacuumed / 2**20,
        "size_refilled": refilled / 2**20,
        # what the refill would have added had no deleted row's space been reused
        "size_unreused": (vacuumed + before * pruned / rows) / 2**20,
        "expected": pruned_span / 0.05,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--finished", type=int, default=1_000_000, help="finished runs loaded")
    parser.add_argument("--backlog", type=int, default=10_000, help="pending runs to drain")
    parser.add_argument("--slots", type=int, default=100, help="the worker's slots")
    parser.add_argument(
        "--passes", type=int, default=5, help="drains of each database, interleaved (median)"
    )
    parser.add_argument("--list-calls", type=int, default=100, help="timed calls per listing")
    parser.add_argument(
        "--prune-hours",
        type=float,
        default=24.0,
        help="hours of the history pruned, oldest first (at most its older half)",
    )
    parser.add_argument(
        "--analyze",
        choices=["with-backlog", "before-backlog"],
        default="with-backlog",
        help="VACUUM ANALYZE once the backlog is there (default), or before it is started",
    )
    args = parser.parse_args()
    args.backlog = max(1000, args.backlog // 1000 * 1000)
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute(
            "SELECT version(), current_setting('autovacuum'), current_setting('fsync'),"
            " current_setting('synchronous_commit')"
        ).fetchone()
    assert row is not None
    print(
        f"{row[0].split(',')[0]}; autovacuum={row[1]}, fsync={row[2]}, synchronous_commit="
        f"{row[3]}; cores: {os.cpu_count()}; worker slots: {args.slots}; drains: median of "
        f"{args.passes} interleaved passes"
    )
    empty, loaded = measure(args)

    head = f"{args.finished:,} finished"
    print(f"\n{'figure':<44} {'empty':>10} {head:>20} {'ratio':>7}")

    def row_of(label: str, before: float, after: float, unit: str) -> None:
        print(f"{label:<44} {before:>10,.2f} {after:>20,.2f} {after / before:>6.2f}x  {unit}")

    row_of("claim+complete throughput", empty["throughput"], loaded["throughput"], "runs/s")
    row_of("claim latency p50", empty["claim_p50"], loaded["claim_p50"], "ms")
    row_of("finish_tasks latency p50", empty["finish_p50"], loaded["finish_p50"], "ms")
    for label, _ in LISTINGS:
        for index, pct in enumerate(("p50", "p95")):
            row_of(
                f"list_runs({label}) {pct}",
                empty["lists"][label][index],
                loaded["lists"][label][index],
                "ms",
            )
    prune = loaded["prune"]
    print(
        f"\nretention of {args.finished:,} finished: pruned {prune['pruned']:,.0f} runs "
        f"(expected ~{prune['expected']:,.0f}) at {prune['rate']:,.0f} runs/s; a batch of "
        f"{defaults.PRUNE_BATCH:,} p50 {prune['batch_p50']:.1f} ms, longest "
        f"{prune['batch_max']:.1f} ms (the longest a run lock is held); runs+tasks "
        f"{prune['size_before']:,.0f} MiB before, {prune['size_after']:,.0f} MiB after, "
        f"{prune['size_vacuumed']:,.0f} MiB after VACUUM (autovacuum's work), "
        f"{prune['size_refilled']:,.0f} MiB once as many new runs are started (without reuse "
        f"of the deleted rows' space: ~{prune['size_unreused']:,.0f} MiB)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main()
    else:
        main()
