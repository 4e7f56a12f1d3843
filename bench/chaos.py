"""Chaos benchmark: how fast a killed worker's step is rescued, and whether every run survives
workers being killed at random.

    python bench/chaos.py                        # PostgreSQL
    python bench/chaos.py --engine sqlite        # SQLite (worker processes on one file)
    python bench/chaos.py --engine both --runs 300 --trials 5

(1) Rescue time after kill -9: a run whose one step takes minutes is started; the worker running it
    is killed with SIGKILL; timed until another worker starts the step again, and until the run
    completes. Median (and range) of --trials runs. Bound: stale_after + heartbeat_interval +
    claim latency.
(2) Chaos: --runs runs of a 3-step workflow, while one of 3 worker processes is killed (SIGKILL)
    at random every 0.5 to 1 s and replaced by a new one. Printed: whether every run completed,
    how many step executions were repeated (each execution appends a line to a log file: the
    count against 3 x runs), how many steps were rescued, the total time.

PostgreSQL: the server at PYPGFLOW_BENCH_DATABASE_URL (default postgres@127.0.0.1:5432), in a
database the benchmark creates and drops. SQLite: a file in a temporary directory. Workers are
separate processes, as in production, with --stale-after (default 5 s) and --heartbeat
(default 1 s): the library defaults are 30 s and 5 s, which would only make this run longer.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pypgflow import StepContext, Workflow
from pypgflow.app import App
from pypgflow.status import RunStatus

ADMIN_URL = os.environ.get(
    "PYPGFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

# -- the workflows -------------------------------------------------------------------------------


def record(log: str, ctx: StepContext) -> None:
    """One line per execution, a single write on an O_APPEND descriptor (never interleaved)."""
    line = json.dumps(
        {
            "run": ctx.run_id,
            "step": ctx.step,
            "attempt": ctx.attempt,
            "instance": ctx.instance_id,
            "pid": os.getpid(),
            "t": time.time(),
        }
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_log(path: str) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


long_step = Workflow("chaos_long", max_attempts=5)


@long_step.step
def hold(input: dict[str, Any], ctx: StepContext) -> str | None:
    """Long on its first attempt (the worker is killed meanwhile), instant on the next."""
    record(input["log"], ctx)
    if ctx.attempt == 1:
        deadline = time.monotonic() + input["seconds"]
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.01)
    return ctx.instance_id


three = Workflow("chaos_three", max_attempts=10)


@three.step
def first(input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx)
    time.sleep(input["sleep"])
    return int(input["i"])


@three.step
def second(first: int, input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx)
    time.sleep(input["sleep"])
    return first * 2


@three.step
def third(second: int, input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx)
    time.sleep(input["sleep"])
    return second + 1


WORKFLOWS = [long_step, three]

# -- databases and worker processes ---------------------------------------------------------------


def with_dbname(url: str, dbname: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@contextmanager
def database(engine: str) -> Iterator[str]:
    """The URL of a fresh, migrated database of ``engine``, removed afterwards."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pypgflow-chaos-") as directory:
            url = f"sqlite:///{os.path.join(directory, 'chaos.db')}"
            with App(url) as app:
                app.migrate()
            yield url
        return
    name = f"pypgflow_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = with_dbname(ADMIN_URL, name)
        with App(url) as app:
            app.migrate()
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def total_rescues(url: str) -> int:
    """Lost attempts recorded (tasks.rescues, summed)."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        try:
            return int(conn.execute("SELECT coalesce(sum(rescues), 0) FROM tasks").fetchone()[0])
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT coalesce(sum(rescues), 0) FROM pypgflow.tasks").fetchone()
        return int(row[0]) if row else 0


class Workers:
    """Worker processes of this benchmark; every one is killed when the block ends."""

    def __init__(self, url: str, args: argparse.Namespace, logs: Path) -> None:
        self.url = url
        self.args = args
        self.logs = logs
        self.count = 0
        self.alive: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.every: list[subprocess.Popen[bytes]] = []

    def start(self, prefix: str) -> str:
        instance = f"{prefix}-{self.count}"
        self.count += 1
        command = [
            sys.executable, __file__, "worker", "--url", self.url, "--instance", instance,
            "--slots", str(self.args.slots), "--stale-after", str(self.args.stale_after),
            "--heartbeat", str(self.args.heartbeat),
        ]  # fmt: skip
        with open(self.logs / f"{instance}.stderr", "wb") as stderr:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        self.alive.append((instance, process))
        self.every.append(process)
        return instance

    def kill(self, instance: str) -> None:
        for name, process in list(self.alive):
            if name == instance:
                process.kill()
                process.wait(10)
                self.alive.remove((name, process))

    def reap(self) -> list[str]:
        """Instances whose process exited by itself."""
        gone = [name for name, p in self.alive if p.poll() is not None]
        self.alive = [(n, p) for n, p in self.alive if n not in gone]
        return gone

    def stop_all(self) -> None:
        for process in self.every:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.every:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.alive = []

    def kill_all(self) -> None:
        for process in self.every:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.alive = []


@contextmanager
def workers(url: str, args: argparse.Namespace, logs: Path) -> Iterator[Workers]:
    pool = Workers(url, args, logs)
    try:
        yield pool
    finally:
        pool.stop_all()
        pool.kill_all()


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def registered(app: App, names: list[str]) -> bool:
    online = {i.instance_id for i in app.instances() if i.status == "online"}
    return set(names) <= online


# -- (1) rescue time after kill -9 ----------------------------------------------------------------


def rescue_times(url: str, args: argparse.Namespace, tmp: Path) -> None:
    log = str(tmp / "rescue.jsonl")
    restarted: list[float] = []
    completed: list[float] = []
    with (
        App(url, workflows=WORKFLOWS, instance_id="chaos-bench") as app,
        workers(url, args, tmp) as pool,
    ):
        for trial in range(args.trials):
            times = rescue_trial(app, pool, log, trial, args)
            if times is not None:
                restarted.append(times[0])
                completed.append(times[1])
    bound = args.stale_after + args.heartbeat
    if restarted:
        print(
            f"  (1) rescue after kill -9, median of {len(restarted)}: started again after "
            f"{statistics.median(restarted):.2f} s (min {min(restarted):.2f}, max "
            f"{max(restarted):.2f}), completed after {statistics.median(completed):.2f} s; "
            f"bound stale_after + heartbeat = {bound:g} s + claim latency"
        )


def rescue_trial(
    app: App, pool: Workers, log: str, trial: int, args: argparse.Namespace
) -> tuple[float, float] | None:
    """Kill -9 the worker running a long step: seconds until it starts again elsewhere, and
    until its run completes."""
    while len(pool.alive) < 2:  # two live workers, as a supervisor would keep them
        pool.start("rescue")
    names = [name for name, _ in pool.alive]
    wait_until(lambda: registered(app, names), 60, "the workers to register")
    run = app.start(long_step, {"log": log, "seconds": 600, "trial": trial})
    wait_until(lambda: any(e["run"] == run.id for e in read_log(log)), 30, "the step to begin")
    (begun,) = [e for e in read_log(log) if e["run"] == run.id]
    victim = begun["instance"]
    # A crash comes at any moment of the heartbeat cycle, not in step with the benchmark.
    time.sleep(random.uniform(0, 2 * args.heartbeat))
    killed_at = time.time()
    pool.kill(victim)
    wait_until(lambda: run.status() in FINISHED, args.stale_after * 4 + 30, "the rescue")
    done_at = time.time()
    again = [e for e in read_log(log) if e["run"] == run.id and e["attempt"] == 2]
    status = run.status()
    if status is not RunStatus.COMPLETED or not again:
        print(f"    trial {trial + 1}: run {status.value}, not rescued as expected")
        return None
    started_again, completed = again[0]["t"] - killed_at, done_at - killed_at
    print(
        f"    trial {trial + 1}: killed {victim}; started again on {again[0]['instance']} after "
        f"{started_again:.2f} s, completed after {completed:.2f} s"
    )
    return started_again, completed


# -- (2) chaos ------------------------------------------------------------------------------------


def chaos(url: str, args: argparse.Namespace, tmp: Path) -> None:
    log = str(tmp / "chaos.jsonl")
    rng = random.Random(args.seed)
    kills = 0
    with (
        App(url, workflows=WORKFLOWS, instance_id="chaos-bench") as app,
        workers(url, args, tmp) as pool,
    ):
        names = [pool.start("chaos") for _ in range(3)]
        wait_until(lambda: registered(app, names), 60, "three workers to register")
        started = time.monotonic()
        inputs = [{"log": log, "i": i, "sleep": args.step_seconds} for i in range(args.runs)]
        runs = app.start_many(three, inputs)
        deadline = started + args.timeout
        next_kill = time.monotonic() + rng.uniform(0.5, 1.0)
        finished = 0
        while time.monotonic() < deadline:
            statuses = collections.Counter(
                r.status for r in app.list_runs(workflow=three, limit=args.runs + 10)
            )
            finished = sum(statuses[s] for s in FINISHED)
            if finished >= args.runs:
                break
            for gone in pool.reap():
                print(f"    worker {gone} exited by itself")
                pool.start("chaos")
            if time.monotonic() >= next_kill:
                victim = rng.choice([n for n, _ in pool.alive])
                pool.kill(victim)
                kills += 1
                pool.start("chaos")
                next_kill = time.monotonic() + rng.uniform(0.5, 1.0)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        by_status = collections.Counter(
            r.status.value for r in app.list_runs(workflow=three, limit=args.runs + 10)
        )
        results_ok = all(
            r.output == 2 * int(r.input["i"]) + 1
            for r in app.list_runs(status=RunStatus.COMPLETED, workflow=three, limit=args.runs + 10)
        )
        rescued = total_rescues(url)
    executions = read_log(log)
    per_step = collections.Counter((e["run"], e["step"]) for e in executions)
    expected = 3 * args.runs
    repeated = len(executions) - len(per_step)
    all_done = by_status.get("completed", 0) == args.runs
    print(
        f"  (2) chaos: {args.runs} runs of 3 steps, 3 workers x {args.slots} slots, "
        f"{kills} kill -9 (one every 0.5-1 s)"
    )
    print(
        f"      every run completed: {'yes' if all_done else 'NO'} ({dict(by_status)}); "
        f"outputs right: {'yes' if results_ok else 'NO'}"
    )
    print(
        f"      step executions: {len(executions)} for {expected} steps "
        f"({len(per_step)} distinct): {repeated} repeated "
        f"({100 * repeated / expected:.1f} %); lost attempts rescued: {rescued}"
    )
    print(f"      total time: {elapsed:.1f} s ({len(runs)} runs started)")


# -- main -----------------------------------------------------------------------------------------


def measure(engine: str, args: argparse.Namespace) -> None:
    print(
        f"{engine}: stale_after={args.stale_after:g} s, heartbeat_interval={args.heartbeat:g} s, "
        f"max_rescues=3, {args.slots} slots per worker"
    )
    with (
        tempfile.TemporaryDirectory(prefix="pypgflow-chaos-logs-") as directory,
        database(engine) as url,
    ):
        tmp = Path(directory)
        if args.trials:
            rescue_times(url, args, tmp)
        if args.runs:
            chaos(url, args, tmp)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["postgres", "sqlite", "both"], default="postgres")
    parser.add_argument("--trials", type=int, default=5, help="kill -9 trials for (1)")
    parser.add_argument("--runs", type=int, default=300, help="3-step runs for (2)")
    parser.add_argument("--stale-after", type=float, default=5.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.25, help="each chaos step")
    parser.add_argument("--timeout", type=float, default=300.0, help="chaos: give up after")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    for engine in ("postgres", "sqlite") if args.engine == "both" else (args.engine,):
        measure(engine, args)


def _die_with_parent(parent: int) -> None:
    while True:
        time.sleep(0.25)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)


def worker_main() -> None:
    import logging

    parser = argparse.ArgumentParser()
    parser.add_argument("worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--stale-after", type=float, default=5.0)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    threading.Thread(target=_die_with_parent, args=(os.getppid(),), daemon=True).start()
    with App(args.url, workflows=WORKFLOWS, instance_id=args.instance) as app:
        app.run_worker(
            {"default": args.slots},
            poll_interval=0.5,
            heartbeat_interval=args.heartbeat,
            stale_after=args.stale_after,
            shutdown_timeout=5.0,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main()
    else:
        main()
