"""Soak: a long pass at half the measured capacity, to see what grows.

    python bench/soak.py                         # 30 minutes on PostgreSQL (make soak)
    python bench/soak.py --minutes 5 --engine sqlite

First the capacity: how many two-step runs per second two worker processes (at the worker's
defaults) keep finishing, a backlog of 5,000 runs kept up for 150 s and the completions counted
over the last 70 s, once retention prunes as fast as runs come: a rate the system sustains, not
a burst (retention deletes a run for every run started, which costs about what the start did).
Then, for ``--minutes``, a producer starts runs at ``--fraction`` (a half) of
that rate, in batches every 100 ms, while probe threads start one run at a time and wait for its
result (the latency a caller sees: from ``start()`` to ``result()`` returning). Retention keeps
completed runs for a minute (the leader prunes every 10 s), as a busy system keeps them for
days: the tables must level off. This machine's PostgreSQL runs with autovacuum off, so the
soak runs ``VACUUM (ANALYZE)`` on pypgflow's tables every minute, throttled as autovacuum is
(``vacuum_cost_delay`` 2 ms), where autovacuum would.

Printed every sample interval: runs started and finished per second, each worker's RSS, the
rows and size of the runs and tasks tables, and the probes' p50/p99. At the end, the first
sample after the warm-up is compared with the last: each worker's RSS grows by less than 10%,
the tables stay within what retention allows, the p99 stays flat (at most 1.5 x, plus 20 ms).
Exits 1 if any of these fails.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench_db import database
from pypgflow import Retention, StepContext, Workflow
from pypgflow.app import App

# -- the workload ----------------------------------------------------------------------------

soak = Workflow("soak")


@soak.step
async def fetch(input: dict[str, Any]) -> dict[str, Any]:
    return {"n": input.get("n", 0)}


@soak.step
def store(fetch: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    return {"n": fetch["n"], "by": ctx.instance_id}


KEEP_COMPLETED = 60.0
PRUNE_INTERVAL = 10.0
WORKERS = 2
PROBES = 4
BACKLOG = 5_000
CAPACITY_SECONDS = 150.0
MEASURE_FROM = 80.0


def worker_main(url: str) -> None:
    """A worker process at the worker's defaults, with the soak's retention; its warnings go to
    its stderr file (printed if the soak fails)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    app = App(url, workflows=[soak])
    app.run_worker(retention=Retention(completed=KEEP_COMPLETED, interval=PRUNE_INTERVAL))


# -- what is measured ------------------------------------------------------------------------


class Tables:
    """Rows and bytes of the runs and tasks tables, on either engine, and the vacuum."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite:")

    def sizes(self) -> dict[str, float]:
        if self.sqlite:
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
            return {"runs": runs, "tasks": tasks, "mb": os.path.getsize(path) / 2**20}
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM pypgflow.runs), (SELECT count(*) FROM pypgflow.tasks),"
                " pg_total_relation_size('pypgflow.runs') + pg_total_relation_size('pypgflow.tasks')"
            ).fetchone()
        assert row is not None
        return {"runs": row[0], "tasks": row[1], "mb": row[2] / 2**20}

    def backlog(self) -> int:
        """Runs not finished yet (unlike finished runs, not thinned out by retention)."""
        query = "SELECT count(*) FROM {}runs WHERE status IN ('pending', 'running')"
        if self.sqlite:
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                return int(conn.execute(query.format("")).fetchone()[0])
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(query.format("pypgflow.")).fetchone()
        assert row is not None
        return int(row[0])

    def vacuum(self) -> None:
        """What autovacuum would do (PostgreSQL; a SQLite file needs nothing of the kind)."""
        if self.sqlite:
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET vacuum_cost_delay = '2ms'")
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'pypgflow'"
                ).fetchall()
            ]
            for name in tables:
                conn.execute(
                    sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("pypgflow", name))
                )


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass
class Sample:
    at: float  # seconds since the soak began
    started_per_s: float
    finished_per_s: float
    rss: list[float]
    runs: int
    tasks: int
    mb: float
    p50_ms: float
    p99_ms: float
    probes: int

    def line(self) -> str:
        rss = " ".join(f"{r:6.1f}" for r in self.rss)
        return (
            f"{self.at / 60:6.1f} min  {self.started_per_s:7.0f} {self.finished_per_s:8.0f}  "
            f"{rss}  {self.runs:8d} {self.tasks:8d} {self.mb:7.1f}  "
            f"{self.p50_ms:7.1f} {self.p99_ms:7.1f} ({self.probes})"
        )


HEADER = (
    "   time     start/s  finish/s  RSS MiB per worker     runs    tasks      MB"
    "   p50 ms  p99 ms (probes)"
)


@dataclass
class Soak:
    app: App
    tables: Tables
    rate: float
    started: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def produce(self) -> None:
        """Start ``rate`` runs per second, in batches every 100 ms, on schedule."""
        began = time.monotonic()
        while not self.stop.is_set():
            due = int(self.rate * (time.monotonic() - began)) - self.started
            if due > 0:
                try:
                    self.app.start_many(soak, [{"n": self.started + i} for i in range(due)])
                except Exception as exc:  # reported at the end
                    self.errors.append(f"producer: {exc!r}")
                    time.sleep(1)
                    continue
                with self.lock:
                    self.started += due
            self.stop.wait(0.1)

    def probe(self) -> None:
        """One run at a time, waiting for its result: the latency a caller sees."""
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                run = self.app.start(soak, {"probe": True})
                run.result(timeout=60)
            except Exception as exc:  # reported at the end
                self.errors.append(f"probe: {exc!r}")
                time.sleep(1)
                continue
            ended = time.monotonic()
            with self.lock:
                self.latencies.append((ended, ended - began))
            self.stop.wait(0.25)


def vacuum_every(tables: Tables, every: float, stop: threading.Event, errors: list[str]) -> None:
    while not stop.wait(every):
        try:
            tables.vacuum()
        except psycopg.Error as exc:
            errors.append(f"vacuum: {exc!r}")


def capacity(app: App, tables: Tables) -> float:
    """Runs per second the workers sustain: a backlog of BACKLOG kept up for CAPACITY_SECONDS,
    the runs finished counted from MEASURE_FROM on (retention pruning by then)."""
    began = time.monotonic()
    started = 0
    marks: list[tuple[float, int]] = []
    while (elapsed := time.monotonic() - began) < CAPACITY_SECONDS:
        backlog = tables.backlog()
        if elapsed >= MEASURE_FROM:
            marks.append((elapsed, started - backlog))
        if backlog < BACKLOG:
            app.start_many(soak, [{"n": started + i} for i in range(BACKLOG - backlog)])
            started += BACKLOG - backlog
        time.sleep(0.2)
    (t1, done1), (t2, done2) = marks[0], marks[-1]
    return (done2 - done1) / (t2 - t1)


@contextlib.contextmanager
def workers(url: str, directory: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = []
    for n in range(WORKERS):
        with (directory / f"worker-{n}.stderr").open("wb") as err:
            processes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "worker", url],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env={**os.environ, "PYPGFLOW_INSTANCE_ID": f"soak-{n}"},
                )
            )
    try:
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def run(url: str, minutes: float, fraction: float, directory: Path) -> bool:
    tables = Tables(url)
    errors: list[str] = []
    with App(url, workflows=[soak]) as app:
        app.migrate()
        with workers(url, directory) as processes:
            time.sleep(2)
            vacuuming = threading.Event()  # what autovacuum would do, from the start
            vacuum = threading.Thread(
                target=vacuum_every, args=(tables, 60.0, vacuuming, errors), daemon=True
            )
            vacuum.start()
            full = capacity(app, tables)
            rate = full * fraction
            while tables.backlog():  # the capacity pass drained before the soak begins
                time.sleep(0.5)
            print(
                f"capacity: {full:.0f} runs/s (2-step runs, {WORKERS} workers at their defaults, "
                f"a backlog of {BACKLOG} kept for {CAPACITY_SECONDS:g} s, retention pruning); "
                f"soaking at {fraction:g} of it = {rate:.0f} "
                f"runs/s for {minutes:g} min; retention {KEEP_COMPLETED:g} s, pruned every "
                f"{PRUNE_INTERVAL:g} s; VACUUM (ANALYZE) every 60 s (autovacuum is off here)",
                flush=True,
            )
            state = Soak(app, tables, rate, errors=errors)
            threads = [
                threading.Thread(target=state.produce, name="producer", daemon=True),
            ] + [
                threading.Thread(target=state.probe, name=f"probe-{n}", daemon=True)
                for n in range(PROBES)
            ]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            every = min(60.0, minutes * 60 / 10)
            samples: list[Sample] = []
            print(HEADER, flush=True)
            last_started, last_done, last_at = 0, 0, began
            while time.monotonic() - began < minutes * 60:
                time.sleep(max(0.0, began + every * (len(samples) + 1) - time.monotonic()))
                now = time.monotonic()
                backlog = tables.backlog()
                with state.lock:
                    started = state.started
                    window = [s for t, s in state.latencies if t > now - every]
                done = started - backlog  # the probes' runs aside
                sizes = tables.sizes()
                sample = Sample(
                    at=now - began,
                    started_per_s=(started - last_started) / (now - last_at),
                    finished_per_s=(done - last_done) / (now - last_at),
                    rss=[rss_mb(p.pid) for p in processes],
                    runs=int(sizes["runs"]),
                    tasks=int(sizes["tasks"]),
                    mb=sizes["mb"],
                    p50_ms=percentile(window, 50) * 1000,
                    p99_ms=percentile(window, 99) * 1000,
                    probes=len(window),
                )
                samples.append(sample)
                print(sample.line(), flush=True)
                last_started, last_done, last_at = started, done, now
                for process in processes:
                    if process.poll() is not None:
                        raise RuntimeError(f"a worker exited with {process.returncode}")
            state.stop.set()
            vacuuming.set()
            for thread in [*threads, vacuum]:
                thread.join(timeout=70)
    return verdict(samples, rate, errors)


def verdict(samples: list[Sample], rate: float, errors: list[str]) -> bool:
    """Compare the first sample after the warm-up (a tenth of the soak, at least one retention
    period) with the last; print each check."""
    warmup = max(KEEP_COMPLETED + PRUNE_INTERVAL, samples[-1].at / 10)
    start = next((s for s in samples if s.at >= warmup), samples[0])
    end = samples[-1]
    # what retention allows: a retention period and a pass of runs, and those in flight
    bound_runs = rate * (KEEP_COMPLETED + 2 * PRUNE_INTERVAL + 30)
    rss = list(zip(start.rss, end.rss, strict=True))
    checks = [
        (
            f"worker RSS {' '.join(f'{a:.1f}->{b:.1f}' for a, b in rss)} MiB: growth < 10%",
            all(b < a * 1.10 for a, b in rss),
        ),
        (
            f"runs rows {start.runs}->{end.runs}, tasks {start.tasks}->{end.tasks}: within "
            f"retention's bound ({bound_runs:.0f} runs)",
            end.runs <= bound_runs and end.tasks <= 2 * bound_runs,
        ),
        (
            f"p99 {start.p99_ms:.1f}->{end.p99_ms:.1f} ms (p50 {start.p50_ms:.1f}->"
            f"{end.p50_ms:.1f}): flat (<= 1.5 x + 20 ms)",
            end.p99_ms <= start.p99_ms * 1.5 + 20,
        ),
        (
            f"producer kept its rate: {end.started_per_s:.0f}/s of {rate:.0f}/s at the end",
            end.started_per_s >= 0.9 * rate,
        ),
        (f"errors: {len(errors)} {errors[:3]}", not errors),
    ]
    print(f"\nfrom {start.at / 60:.1f} min (after the warm-up) to {end.at / 60:.1f} min:")
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    print(f"  tables {start.mb:.1f} -> {end.mb:.1f} MB")
    worst = max(samples, key=lambda s: s.p99_ms)
    print(
        f"  worst sample: p99 {worst.p99_ms:.1f} ms (p50 {worst.p50_ms:.1f}) at "
        f"{worst.at / 60:.1f} min, {worst.finished_per_s:.0f} runs/s finished"
    )
    return all(ok for _, ok in checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fraction", type=float, default=0.5, help="of the capacity")
    parser.add_argument("--engine", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pypgflow-soak-") as directory:
        if args.engine == "sqlite":
            ok = run(f"sqlite:///{directory}/soak.db", args.minutes, args.fraction, Path(directory))
        else:
            with database("pypgflow_soak") as url:
                ok = run(url, args.minutes, args.fraction, Path(directory))
        if not ok:
            for stderr in sorted(Path(directory).glob("worker-*.stderr")):
                print(f"--- {stderr.name} (tail)\n{stderr.read_text(errors='replace')[-2000:]}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2])
    else:
        main()
