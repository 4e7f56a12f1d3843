"""Worker processes, waiting, and reading the database behind the engine's back, for the
integration tests, on either engine (PostgreSQL URL or ``sqlite:///`` URL)."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from pypgflow.app import App, Run
from pypgflow.engines.sqlite import sqlite_path_from_url
from pypgflow.status import RunStatus, StepStatus
from tests.integration.flows import read_log

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def postgres_only(reason: str) -> pytest.MarkDecorator:
    """Run a test on PostgreSQL only, and say why: it gets the ``database_url`` of PostgreSQL
    alone (no SQLite variant), marked ``postgres_only(reason=...)``, so that
    ``pytest -m postgres_only`` lists these scenarios and the reason stays with each."""
    return pytest.mark.parametrize(
        "database_url",
        [pytest.param("postgres", marks=pytest.mark.postgres_only(reason=reason))],
        indirect=True,
    )


def is_sqlite(url: str) -> bool:
    return url.lower().startswith("sqlite:")


def spawn_test_process(
    args: list[str], instance_id: str, stderr_path: Path
) -> subprocess.Popen[bytes]:
    """``args`` (a ``python -m tests...`` command) as a child process with ``instance_id`` as
    its PYPGFLOW_INSTANCE_ID, this repository importable, its output in ``stderr_path``."""
    env = {
        **os.environ,
        "PYPGFLOW_INSTANCE_ID": instance_id,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p
        ),
    }
    env.pop("PYPGFLOW_DATABASE_URL", None)
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=subprocess.STDOUT,
        )


class WorkerProcess:
    """``python -m tests.integration.worker_proc`` as a real child process, its stderr in a file."""

    def __init__(
        self,
        url: str,
        instance_id: str,
        directory: Path,
        *,
        queues: Iterable[str] = ("default=8",),
        poll_interval: float = 0.5,
        shutdown_timeout: float = 10.0,
        max_lifetime: float = 120.0,
        heartbeat_interval: float | None = None,
        stale_after: float | None = None,
        max_rescues: int | None = None,
        deploy: str | None = None,
        answer_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.instance_id = instance_id
        self.stderr_path = directory / f"worker-{instance_id}.stderr"
        self.args = [sys.executable, "-m", "tests.integration.worker_proc", "--url", url]
        for queue in queues:
            self.args += ["--queue", queue]
        self.args += [
            "--poll-interval", str(poll_interval),
            "--shutdown-timeout", str(shutdown_timeout),
            "--max-lifetime", str(max_lifetime),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        for option, value in (
            ("--heartbeat-interval", heartbeat_interval),
            ("--stale-after", stale_after),
            ("--max-rescues", max_rescues),
            ("--deploy", deploy),
            ("--answer-timeout", answer_timeout),
        ):
            if value is not None:
                self.args += [option, str(value)]
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"WorkerProcess({self.instance_id!r}, pid={pid})"

    def start(self) -> WorkerProcess:
        self.process = spawn_test_process(self.args, self.instance_id, self.stderr_path)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if still running after ``timeout``."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit code within ``timeout`` (TimeoutExpired otherwise)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL if still running, and reap: always safe to call."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL: reaped at once
            self.process.wait(timeout=10)


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05
) -> T:
    """Call ``probe`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one statement (in the engine's SQL) on a short-lived connection of its own."""
    if is_sqlite(url):
        with contextlib.closing(sqlite3.connect(sqlite_path_from_url(url), timeout=5)) as db:
            return db.execute(statement, params or ()).fetchall()
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(statement, params).fetchall()


def listening_connections(url: str) -> int:
    """How many connections to this PostgreSQL database sit in LISTEN for work (a worker's
    notification thread; not an App's listener for finished runs, on the ``_done`` channel)."""
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query ILIKE 'LISTEN %%_work\"'",
    )
    return int(rows[0][0])


def wait_ready(app: App, workers: Iterable[WorkerProcess], *, timeout: float = 15.0) -> None:
    """Until every worker is registered and listening for notifications (on SQLite, where a
    listener is a thread of the worker that nothing outside can see, registered: it starts
    listening right after it registers)."""
    workers = list(workers)
    wanted = {w.instance_id for w in workers}
    url = app.url or ""

    def ready() -> bool:
        for worker in workers:
            if not worker.alive():
                raise AssertionError(f"{worker} exited early:\n{worker.stderr()}")
        registered = {i.instance_id for i in app.instances()}
        if is_sqlite(url):
            return wanted <= registered
        return wanted <= registered and listening_connections(url) >= len(workers)

    wait_for(ready, timeout=timeout, what=f"workers {sorted(wanted)} to be ready")


def wait_all_finished(
    app: App, count: int, *, timeout: float, workers: Iterable[WorkerProcess] = ()
) -> None:
    """Until ``count`` runs are finished (completed, failed or cancelled)."""
    workers = list(workers)
    finished = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

    def done() -> bool:
        for worker in workers:
            if not worker.alive():
                raise AssertionError(f"{worker} exited early:\n{worker.stderr()}")
        runs = app.list_runs(limit=100_000)
        return len(runs) >= count and all(r.status in finished for r in runs)

    try:
        wait_for(done, timeout=timeout, what=f"{count} runs to finish", interval=0.1)
    except AssertionError:
        statuses = collections.Counter(r.status.value for r in app.list_runs(limit=100_000))
        raise AssertionError(f"runs not finished after {timeout:g} s: {dict(statuses)}") from None


def executions(log: Path, event: str = "begin") -> collections.Counter[tuple[str, str]]:
    """How many times each (run, step) logged ``event``."""
    return collections.Counter((e["run"], e["step"]) for e in read_log(log) if e["event"] == event)


def task_rows(url: str) -> list[tuple[str, str, str, int, str | None]]:
    """(run id, step, status, attempt, instance id) of every task, read from the table itself."""
    table = "tasks" if is_sqlite(url) else "pypgflow.tasks"
    return [
        (str(run_id), step, status, attempt, instance)
        for run_id, step, status, attempt, instance in query(
            url, f"SELECT run_id, step, status, attempt, instance_id FROM {table} ORDER BY id"
        )
    ]


def terminate_backends(url: str) -> int:
    """Kill every other connection to this PostgreSQL database (the workers' and the test
    app's), and wait until their processes are gone (up to 5 s each): what a client meets next
    is a connection the server closed, not one in the middle of closing."""
    rows = query(
        url,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return int(rows[0][0])


def assert_each_step_ran_once(
    app: App, url: str, log_path: Path, ones: list[Run], threes: list[Run]
) -> None:
    """Every run completed; each of its steps ran once, at attempt 1, and is recorded so."""
    runs = {r.id: r for r in app.list_runs(limit=10_000)}
    assert len(runs) == len(ones) + len(threes)
    not_completed = {r.id: r.status for r in runs.values() if r.status is not RunStatus.COMPLETED}
    assert not_completed == {}
    for run in ones:
        assert runs[run.id].output == {"i": runs[run.id].input["i"], "steps": ["work"]}
    for run in threes:
        assert runs[run.id].output == {
            "i": runs[run.id].input["i"],
            "steps": ["first", "second", "third"],
        }
    expected = {(r.id, "work") for r in ones} | {
        (r.id, s) for r in threes for s in ("first", "second", "third")
    }
    begun = executions(log_path)
    assert set(begun) == expected
    assert {key: n for key, n in begun.items() if n != 1} == {}
    assert {e["attempt"] for e in read_log(log_path)} == {1}
    tasks = task_rows(url)
    assert len(tasks) == len(expected)
    assert {(status, attempt) for _, _, status, attempt, _ in tasks} == {("completed", 1)}
    for run in threes[:3]:
        steps = app.get_run(run.id).steps
        assert [(s.status, s.attempts, s.errors) for s in steps] == [
            (StepStatus.COMPLETED, 1, ())
        ] * 3
