"""Dashboard benchmark: every page and API endpoint beside 1,000,000 stored runs.

    python bench/dashboard.py                  # 1,000,000 runs (the default)
    python bench/dashboard.py --runs 100000    # a quicker pass

A PostgreSQL database (created and dropped here, at PYPGFLOW_BENCH_DATABASE_URL, default
postgres@127.0.0.1:5432) is migrated, then loaded in SQL, in batches of 100,000 runs of one
``INSERT ... SELECT FROM generate_series`` each for the runs and one for their tasks: rows shaped
as the engine stores them (a two-step graph in each run's steps column, a task per step, errors
on the tasks of failed runs), across four workflows and two queues, created over the last 30
days (so the last hour holds about 1,400 of a million): 94% completed, 3% failed (two kinds of
error), 1% cancelled, 1% running, 1% pending. Then ``VACUUM ANALYZE`` runs, what autovacuum
would have done by then (this machine's PostgreSQL runs with autovacuum off). The dashboard is
served by uvicorn in a thread on a loopback port, as ``pypgflow dashboard`` serves it, and each
page and endpoint is requested over one kept-alive HTTP connection (two warm-up requests, then
``--requests``), timed from the request sent to the last byte of the response read: p50 and p95.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import psycopg
import uvicorn

from bench_db import database
from pypgflow import RunStatus
from pypgflow.app import App
from pypgflow.dashboard import create_app
from pypgflow.insight import RunFilter

BATCH = 100_000
TOKEN = "bench-token"
WORKFLOWS = ("ingest", "report", "billing", "notify")

# One batch of runs, numbered first..last, newest last: n / total of 30 days back from now.
# Status by n %% 100: 0-2 failed, 3 cancelled, 4 running, 5 pending (only among the newest runs:
# older ones are completed instead), the rest completed.
LOAD_RUNS = """
INSERT INTO pypgflow.runs
    (id, workflow, status, queue, priority, input, output, error, remaining_steps,
     created_at, scheduled_at, started_at, finished_at, steps)
SELECT uuid_generate_v7(at) AS id, wf, st, CASE WHEN n %% 5 = 0 THEN 'bulk' ELSE 'default' END, 0,
       jsonb_build_object('i', n, 'customer', 'c' || (n %% 1000)),
       CASE WHEN st = 'completed' THEN jsonb_build_object('total', n %% 977) END,
       CASE WHEN st = 'failed' THEN jsonb_build_object(
           'step', 'deliver', 'attempt', 3, 'type', CASE WHEN n %% 2 = 0 THEN 'TimeoutError'
           ELSE 'ValueError' END, 'message', 'upstream said no to ' || n, 'traceback', '') END,
       CASE WHEN st IN ('completed', 'failed', 'cancelled') THEN 0 ELSE 1 END,
       at, at, CASE WHEN st <> 'pending' THEN at END,
       CASE WHEN st IN ('completed', 'failed', 'cancelled') THEN at + interval '2 seconds' END,
       jsonb_build_object(
           'prepare', jsonb_build_object('position', 0, 'status',
               CASE WHEN st = 'pending' THEN 'ready' WHEN st = 'cancelled' THEN 'cancelled'
               ELSE 'completed' END, 'depends_on', '[]'::jsonb, 'remaining_deps', 0,
               'max_attempts', 3, 'remaining_tasks', 0, 'task_count', 1),
           'deliver', jsonb_build_object('position', 1, 'status',
               CASE WHEN st IN ('completed', 'failed', 'cancelled') THEN st
                    WHEN st = 'running' THEN 'ready' ELSE 'waiting' END,
               'depends_on', '["prepare"]'::jsonb, 'remaining_deps',
               CASE WHEN st = 'pending' THEN 1 ELSE 0 END, 'max_attempts', 3,
               'remaining_tasks', 0, 'task_count', 1))
FROM (
    SELECT n, (ARRAY['ingest', 'report', 'billing', 'notify'])[1 + n %% 4] AS wf,
           now() - (%(total)s - n) * (interval '30 days' / %(total)s) AS at,
           CASE WHEN n %% 100 < 3 THEN 'failed' WHEN n %% 100 = 3 THEN 'cancelled'
                WHEN n %% 100 = 4 AND n > %(total)s - 2000 THEN 'running'
                WHEN n %% 100 = 5 AND n > %(total)s - 2000 THEN 'pending'
                ELSE 'completed' END AS st
    FROM generate_series(%(first)s::int, %(last)s::int) AS n
) AS g
"""

LOAD_TASKS = """
INSERT INTO pypgflow.tasks
    (run_id, step, workflow, queue, priority, status, run_at, attempt, max_attempts, output,
     errors, instance_id, created_at, started_at, finished_at)
SELECT r.id, s.step, r.workflow, r.queue, 0,
       CASE WHEN r.status = 'completed' THEN 'completed'
            WHEN r.status = 'failed' AND s.step = 'deliver' THEN 'failed'
            WHEN r.status = 'failed' THEN 'completed'
            WHEN r.status = 'cancelled' THEN 'cancelled'
            WHEN r.status = 'running' AND s.step = 'prepare' THEN 'completed'
            WHEN r.status = 'running' THEN 'running'
            ELSE 'queued' END,
       r.created_at, CASE WHEN r.status = 'failed' AND s.step = 'deliver' THEN 3
                          WHEN r.status = 'pending' THEN 0 ELSE 1 END, 3,
       CASE WHEN r.status = 'completed' THEN r.output END,
       CASE WHEN r.status = 'failed' AND s.step = 'deliver'
            THEN jsonb_build_array(r.error, r.error, r.error) ELSE '[]'::jsonb END,
       CASE WHEN r.status <> 'pending' THEN 'bench-worker' END,
       r.created_at, CASE WHEN r.status <> 'pending' THEN r.created_at END,
       CASE WHEN r.status IN ('completed', 'failed', 'cancelled') THEN r.finished_at END
FROM pypgflow.runs r
CROSS JOIN (VALUES ('prepare'), ('deliver')) AS s(step)
WHERE r.created_at >= now() - (%(total)s - %(first)s + 1) * (interval '30 days' / %(total)s)
  AND r.created_at < now() - (%(total)s - %(last)s - 1) * (interval '30 days' / %(total)s)
  AND (r.status <> 'pending' OR s.step = 'prepare')
"""

# A UUIDv7 for a timestamp, in SQL (PostgreSQL 15 has no uuidv7()): the same layout as ids.py.
UUID_V7 = """
CREATE OR REPLACE FUNCTION uuid_generate_v7(at timestamptz) RETURNS uuid LANGUAGE sql AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$
"""


def load(url: str, total: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(UUID_V7)
        for first in range(1, total + 1, BATCH):
            last = min(total, first + BATCH - 1)
            params = {"first": first, "last": last, "total": total}
            with conn.transaction():
                conn.execute(LOAD_RUNS, params)  # type: ignore[arg-type]
                conn.execute(LOAD_TASKS, params)  # type: ignore[arg-type]
            print(f"  loaded runs {first:,}..{last:,}", flush=True)
        conn.execute("DROP FUNCTION uuid_generate_v7(timestamptz)")
    return time.perf_counter() - started


def vacuum_analyze(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        setting = conn.execute("SHOW autovacuum").fetchone()
        print(
            f"  autovacuum is {setting[0] if setting else '?'} on this server: VACUUM ANALYZE now"
        )
        conn.execute("VACUUM ANALYZE pypgflow.runs")
        conn.execute("VACUUM ANALYZE pypgflow.tasks")
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: App) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(app, token=TOKEN), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def timings(port: int, path: str, requests: int) -> tuple[float, float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    samples = []
    status = 0
    for i in range(requests + 2):
        started = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        status = response.status
        if i >= 2:
            samples.append((time.perf_counter() - started) * 1000)
    conn.close()
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, status


def endpoints(app: App) -> list[tuple[str, str]]:
    failed = app.engine.find_runs(RunFilter(statuses=(RunStatus.FAILED,)), limit=1).runs[0]
    second = app.engine.find_runs(RunFilter(), limit=50)
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    return [
        ("overview", "/"),
        ("runs", "/runs"),
        ("runs, page 2 (cursor)", f"/runs?cursor={second.next_cursor}"),
        ("runs by status (failed)", "/runs?status=failed"),
        ("runs by workflow", "/runs?workflow=billing"),
        ("runs by workflow and status", "/runs?workflow=billing&status=failed"),
        ("runs created in the last hour", "/runs?" + urlencode({"after": hour_ago})),
        ("runs by queue (window)", "/runs?queue=bulk"),
        ("runs, search (window)", "/runs?search=c123"),
        ("run detail", f"/runs/{failed.id}"),
        ("run detail, live part", f"/runs/{failed.id}/live"),
        ("failed (groups)", "/failed"),
        ("workflows", "/workflows"),
        ("instances", "/instances"),
        ("schedules", "/schedules"),
        ("GET /api/runs", "/api/runs"),
        ("GET /api/runs?status=failed&workflow=", "/api/runs?status=failed&workflow=billing"),
        ("GET /api/runs/{id}", f"/api/runs/{failed.id}"),
        ("GET /api/workflows", "/api/workflows"),
        ("GET /api/failures", "/api/failures"),
        ("GET /api/overview", "/api/overview"),
        ("GET /api/instances", "/api/instances"),
        ("GET /api/schedules", "/api/schedules"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to store (default 1M)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per endpoint")
    args = parser.parse_args()
    with database("pypgflow_bench_dashboard") as url:
        app = App(url)
        app.migrate()
        print(f"Loading {args.runs:,} runs ({2 * args.runs:,} tasks) in SQL, {BATCH:,} a batch ...")
        print(f"  loaded in {load(url, args.runs):.0f} s")
        print(f"  VACUUM ANALYZE in {vacuum_analyze(url):.0f} s")
        with serving(app) as port:
            print(
                f"\n{'page or endpoint':<40} {'p50 ms':>8} {'p95 ms':>8}  ({args.requests} requests)"
            )
            worst = 0.0
            for label, path in endpoints(app):
                p50, p95, status = timings(port, path, args.requests)
                worst = max(worst, p95)
                flag = "" if status == 200 else f"  HTTP {status}"
                print(f"{label:<40} {p50:8.1f} {p95:8.1f}{flag}", flush=True)
            print(f"\nslowest p95: {worst:.1f} ms (target: < 100 ms)")
        app.close()


if __name__ == "__main__":
    sys.exit(main())
