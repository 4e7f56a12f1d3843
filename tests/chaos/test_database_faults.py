"""Faults of the database itself, PostgreSQL only (a SQLite file has no server to restart):

(2) PostgreSQL restarted at random every 5-40 s (fast or immediate, as after a crash) and
    backends killed with ``pg_terminate_backend`` in between, while 4 producer threads start
    10,000 runs one ``start()`` at a time and 4 worker processes run them: every acknowledged
    start has its run, none is stuck, nobody is restarted by hand; the throughput under faults
    as a ratio of the same pass without them.
(8) Idempotency: 50 threads start one key at once while the server restarts: exactly one run,
    and every thread that got an answer got that run.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from pypgflow.app import App
from pypgflow.errors import DatabaseError
from tests.chaos import audit
from tests.chaos.conftest import Figures
from tests.chaos.harness import Fleet, run_statuses
from tests.conftest import ADMIN_URL
from tests.integration import flows
from tests.integration.helpers import WorkerProcess, postgres_only, wait_ready
from tests.integration.server import Cluster, local_cluster, needs_restart_rights, wait_accepting

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.restart_db,
    postgres_only("restarts the PostgreSQL server: a SQLite file has no server to restart"),
    needs_restart_rights,
    pytest.mark.timeout(1200),
]

RUNS = int(os.environ.get("PYPGFLOW_CHAOS_DB_RUNS", "10000"))
PRODUCERS = 4
WORKERS = 4
STEP_SECONDS = 0.05


@dataclass
class Faults:
    """A thread restarting the server every 5-40 s and terminating backends of ``url``'s
    database every 0.5-3 s in between, until stopped."""

    cluster: Cluster
    url: str
    rng: random.Random
    restarts: list[tuple[str, float]] = field(default_factory=list)
    terminated: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Faults:
        self._thread = threading.Thread(target=self._inject, name="faults", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=180)

    def _inject(self) -> None:
        while not self._stop.is_set():
            restart_at = time.monotonic() + self.rng.uniform(5, 40)
            while time.monotonic() < restart_at:
                if self._stop.wait(self.rng.uniform(0.5, 3.0)):
                    return
                self.terminated += self._terminate_some()
            mode = self.rng.choice(["fast", "immediate"])
            self.restarts.append((mode, self.cluster.restart(mode)))

    def _terminate_some(self) -> int:
        """Terminate one to three backends of the database (workers', producers' or both)."""
        dbname = psycopg.conninfo.conninfo_to_dict(self.url)["dbname"]
        with (
            contextlib.suppress(psycopg.OperationalError),
            psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn,
        ):
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                " ORDER BY random() LIMIT %s",
                [dbname, self.rng.randint(1, 3)],
            ).fetchall()
            return sum(1 for (done,) in rows if done)
        return 0


@dataclass
class Producers:
    """``threads`` producers starting ``count`` runs between them, one ``start()`` each, with an
    idempotency key per run and retried on a database error (safe with the key, as documented)."""

    app: App
    count: int
    log: str
    threads: int = PRODUCERS
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> run id
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def run(self, prefix: str) -> float:
        """Start every run: the seconds it took."""
        began = time.monotonic()
        workers = [
            threading.Thread(target=self._produce, args=(prefix, n), name=f"producer-{n}")
            for n in range(self.threads)
        ]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        return time.monotonic() - began

    def _produce(self, prefix: str, n: int) -> None:
        for i in range(n, self.count, self.threads):
            key = f"{prefix}-{i}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    run = self.app.start(
                        flows.dag,
                        {"log": self.log, "i": i, "sleep": STEP_SECONDS},
                        idempotency_key=key,
                    )
                except DatabaseError as exc:
                    self.errors[type(exc).__name__] += 1
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
                    continue
                self.acknowledged[key] = run.id
                break


@pytest.fixture
def fleet(spawn_worker: Callable[..., WorkerProcess]) -> Fleet:
    return Fleet(spawn_worker, "dbfault", {"queues": ["default=10"]})


def _pass(
    app: App, fleet: Fleet, log_path: Path, prefix: str, total: int, faults: Faults | None
) -> tuple[Producers, float]:
    """Start RUNS runs (under ``faults`` if given) and wait until ``total`` runs are finished:
    the producers and the seconds from the first start to the last run's end."""
    producers = Producers(app, RUNS, str(log_path))
    began = time.monotonic()
    with faults or contextlib.nullcontext():
        producers.run(prefix)
        deadline = time.monotonic() + 900
        while True:
            fleet.check_alive()
            with contextlib.suppress(DatabaseError):  # the server may be restarting
                if run_statuses(app) == {"completed": total}:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"runs not finished: {dict(run_statuses(app))}")
            time.sleep(0.2)
    return producers, time.monotonic() - began


def test_database_restarts_and_killed_backends_under_load(
    app: App,
    database_url: str,
    log_path: Path,
    fleet: Fleet,
    figures: Figures,
) -> None:
    cluster = local_cluster()
    rng = random.Random(os.environ.get("PYPGFLOW_CHAOS_SEED"))
    wait_ready(app, fleet.start(WORKERS), timeout=60)

    calm, calm_seconds = _pass(app, fleet, log_path, "calm", RUNS, None)
    faults = Faults(cluster, database_url, rng)
    stormy, stormy_seconds = _pass(app, fleet, log_path, "faults", 2 * RUNS, faults)

    infos = {r.id: r for r in app.list_runs(limit=3 * RUNS)}
    lost = [key for key, run_id in stormy.acknowledged.items() if run_id not in infos]
    wrong = [
        run_id
        for run_id in stormy.acknowledged.values()
        if run_id in infos
        and (
            infos[run_id].status.value != "completed"
            or infos[run_id].output != flows.dag_output(int(infos[run_id].input["i"]))
        )
    ]
    found = audit.verdict(database_url)
    modes = collections.Counter(mode for mode, _ in faults.restarts)
    downtime = [seconds for _, seconds in faults.restarts]
    figures.add(
        f"{RUNS} runs of the 3-step DAG started by {PRODUCERS} threads, one start() each, "
        f"{WORKERS} workers x 10 slots; without faults: {calm_seconds:.1f} s "
        f"({RUNS / calm_seconds:.0f} runs/s)"
    )
    figures.add(
        f"under faults: {len(faults.restarts)} restarts ({dict(modes)}, each "
        f"{min(downtime, default=0):.1f}-{max(downtime, default=0):.1f} s), "
        f"{faults.terminated} backends terminated: {stormy_seconds:.1f} s "
        f"({RUNS / stormy_seconds:.0f} runs/s) = {calm_seconds / stormy_seconds:.2f} of the "
        f"fault-free throughput"
    )
    figures.add(
        f"starts acknowledged {len(stormy.acknowledged)}/{RUNS}, lost {len(lost)}; producer "
        f"errors retried {dict(stormy.errors)}; runs wrong or unfinished {len(wrong)}; "
        f"completions recorded once (audit): {found.tasks - len(found.tasks_not_completed_once)}/"
        f"{found.tasks}; late overwrites {len(found.late_overwrites)}; workers replaced by hand: 0"
    )
    assert len(calm.acknowledged) == RUNS
    assert len(stormy.acknowledged) == RUNS
    assert lost == []
    assert wrong == []
    assert found.violations() == []
    assert run_statuses(app) == {"completed": 2 * RUNS}
    assert faults.restarts, "no restart happened: the pass tested nothing"
    fleet.check_alive()
    assert set(stormy.errors) <= {"DatabaseUnavailable"}, stormy.errors


def _start_together(
    app: App, key: str, log: str, delays: list[float], fault: Callable[[], object]
) -> tuple[list[tuple[str, float, float]], collections.Counter[str], float, float]:
    """A thread per delay starts a run with ``key`` that many seconds after ``fault()`` began,
    each retrying on a database error: (run id answered, call began, answered) of each, the
    errors they retried, and when the fault began and ended (time.monotonic())."""
    barrier = threading.Barrier(len(delays) + 1)
    answers: list[tuple[str, float, float]] = []
    errors: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def start(delay: float) -> None:
        barrier.wait()
        time.sleep(delay)
        began = time.monotonic()
        deadline = began + 120
        while True:
            try:
                run = app.start(flows.one, {"log": log}, idempotency_key=key)
            except DatabaseError as exc:
                with lock:
                    errors[type(exc).__name__] += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            with lock:
                answers.append((run.id, began, time.monotonic()))
            return

    pool = [threading.Thread(target=start, args=(delay,)) for delay in delays]
    for thread in pool:
        thread.start()
    barrier.wait()
    fault_began = time.monotonic()
    fault()
    fault_ended = time.monotonic()
    for thread in pool:
        thread.join(timeout=150)
    return answers, errors, fault_began, fault_ended


def test_one_idempotency_key_started_by_50_threads_across_restarts(
    app: App, log_path: Path, figures: Figures
) -> None:
    cluster = local_cluster()
    rng = random.Random(os.environ.get("PYPGFLOW_CHAOS_SEED"))
    threads = 50
    met_the_restart = 0
    for round_ in range(6):
        key = f"once-{round_}"
        mode = "immediate" if round_ % 2 else "fast"

        def restart(mode: str = mode) -> None:
            cluster.restart(mode)

        # The starts are spread over the restart's shutdown, its downtime and its start
        delays = [rng.uniform(0, 3.0) for _ in range(threads)]
        answers, errors, down, up = _start_together(app, key, str(log_path), delays, restart)
        stored = [r.id for r in app.list_runs(limit=1000) if r.idempotency_key == key]
        # calls under way while the server stopped and started again
        during = sum(1 for _, began, answered in answers if began < up and answered > down)
        after = sum(1 for _, began, _ in answers if began > up)
        met_the_restart += during
        figures.add(
            f"{threads} threads, one key, a {mode} restart ({up - down:.1f} s) among them: "
            f"{during} calls under way during it, {after} after; runs stored {len(stored)}, distinct answers "
            f"{len({run_id for run_id, _, _ in answers})}, answered {len(answers)}/{threads}, "
            f"errors retried {dict(errors)}"
        )
        assert len(stored) == 1
        assert {run_id for run_id, _, _ in answers} == set(stored)
        assert len(answers) == threads
        assert set(errors) <= {"DatabaseUnavailable"}, errors
    assert met_the_restart > 0, "no start met a restart: the scenario tested nothing"


@pytest.fixture(autouse=True)
def _server_back() -> Iterator[None]:
    """Whatever happened, the server accepts connections again for the next test."""
    yield
    wait_accepting(ADMIN_URL, timeout=120)
