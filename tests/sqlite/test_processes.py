"""Several worker processes on one SQLite file, and how fast a started run begins.

Every test here starts real processes (``tests.sqlite.worker_proc``) and kills them all when it
ends, whatever happens; each is bounded in time.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections import Counter
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.engines.sqlite import SqliteEngine
from tests.conftest import running_worker
from tests.sqlite import flows
from tests.sqlite.conftest import Processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_three_worker_processes_share_300_runs_without_claiming_twice(
    db_path: str, tmp_path: Path, processes: Processes
) -> None:
    log = str(tmp_path / "executions.log")
    app = App(engine=SqliteEngine(db_path), workflows=flows.ALL)
    try:
        for _ in range(3):
            processes.worker(db_path, "--slots", "6", "--poll-interval", "0.5")
        wait_for(lambda: len(app.instances()) == 3, 30, "three registered workers")
        runs = []
        for batch in range(3):  # starts interleave with claims and outcomes
            inputs = [{"log": log, "i": batch * 100 + i, "sleep": 0.02} for i in range(100)]
            runs.extend(app.start_many(flows.chain, inputs))
        assert len({r.id for r in runs}) == 300
        results = [r.result(timeout=60) for r in runs]
        assert results == [(batch_i * 2) + 1 for batch_i in range(300)]
        codes = processes.stop_all()
        assert codes == [0, 0, 0], processes.stderr()
    finally:
        app.close()

    executions = flows.read_log(log)
    per_step = Counter((e["run"], e["step"]) for e in executions)
    assert len(per_step) == 900
    assert set(per_step.values()) == {1}, [k for k, n in per_step.items() if n > 1][:5]
    assert {e["attempt"] for e in executions} == {1}
    assert len({e["pid"] for e in executions}) == 3  # every process took part
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall() == [
            ("completed", 300)
        ]
        assert conn.execute(
            "SELECT status, attempt, count(*) FROM tasks GROUP BY status, attempt"
        ).fetchall() == [("completed", 1, 900)]
        assert conn.execute("SELECT count(*) FROM instances").fetchone() == (0,)
    conn.close()


def test_start_latency_with_a_worker_in_this_process(db_path: str, tmp_path: Path) -> None:
    """The start's commit wakes the worker directly: no polling (its poll interval is 5 s)."""
    log = str(tmp_path / "ping.log")
    app = App(engine=SqliteEngine(db_path), workflows=flows.ALL)
    latencies = []
    try:
        with running_worker(app, poll_interval=5.0):
            wait_for(lambda: len(app.instances()) == 1, 10, "the worker")
            time.sleep(0.2)  # idle: sleeping on its 5 s poll
            for _ in range(7):
                before = time.time()
                run = app.start(flows.ping, {"log": log})
                assert run.result(timeout=10) == "pong"
                began = flows.read_log(log)[-1]
                assert began["run"] == run.id
                latencies.append(began["t"] - before)
                time.sleep(0.05)
    finally:
        app.close()
    # Typically a few milliseconds; ~50 ms is the promise, the bound is generous for slow CI.
    print("in-process latencies", [round(x * 1000, 1) for x in latencies])
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, latencies


def test_start_latency_with_a_worker_in_another_process(
    db_path: str, tmp_path: Path, processes: Processes
) -> None:
    """Another process's worker polls PRAGMA data_version: it begins a run within ~200 ms of
    the start although its poll interval is 5 s."""
    log = str(tmp_path / "ping.log")
    app = App(engine=SqliteEngine(db_path), workflows=flows.ALL)
    latencies = []
    try:
        processes.worker(db_path, "--slots", "2", "--poll-interval", "5")
        wait_for(lambda: len(app.instances()) == 1, 30, "the worker process")
        warm = app.start(flows.ping, {"log": log})
        assert warm.result(timeout=10) == "pong"
        for _ in range(7):
            time.sleep(0.1)
            before = time.time()
            run = app.start(flows.ping, {"log": log})
            assert run.result(timeout=10) == "pong"
            began = flows.read_log(log)[-1]
            assert began["run"] == run.id
            latencies.append(began["t"] - before)
        assert processes.stop_all() == [0], processes.stderr()
    finally:
        app.close()
    print("other-process latencies", [round(x * 1000, 1) for x in latencies])
    assert statistics.median(latencies) < 0.5, latencies
    assert max(latencies) < 2.0, latencies  # far below the 5 s poll


def test_a_stopped_worker_process_hands_its_steps_back(
    db_path: str, tmp_path: Path, processes: Processes
) -> None:
    """SIGTERM while steps run past the shutdown timeout: the worker hands them back (the
    interrupted attempt not counted) and deregisters; another worker then runs them."""
    log = str(tmp_path / "slow.log")
    app = App(engine=SqliteEngine(db_path), workflows=flows.ALL)
    try:
        processes.worker(
            db_path, "--slots", "3", "--poll-interval", "0.2", "--shutdown-timeout", "0.2"
        )
        wait_for(lambda: len(app.instances()) == 1, 30, "the worker process")
        runs = app.start_many(flows.chain, [{"log": log, "i": i, "sleep": 0.6} for i in range(3)])
        wait_for(lambda: len(flows.read_log(log)) == 3, 20, "three steps to begin")
        assert processes.stop_all() == [0], processes.stderr()
        assert app.instances() == []
        with sqlite3.connect(db_path) as conn:
            assert conn.execute(
                "SELECT step, status, attempt, count(*) FROM tasks GROUP BY step, status, attempt"
            ).fetchall() == [("first", "queued", 0, 3)]
        conn.close()
        with running_worker(app, poll_interval=0.2):
            assert [r.result(timeout=30) for r in runs] == [1, 3, 5]
    finally:
        app.close()
    executions = flows.read_log(log)
    per_step = Counter((e["run"], e["step"]) for e in executions)
    # At least once: the interrupted first steps ran again, as attempt 1 both times.
    assert sorted(per_step.values()) == [1] * 6 + [2] * 3
    assert {e["attempt"] for e in executions} == {1}
