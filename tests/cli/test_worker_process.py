"""`pypgflow worker` as a real process: it runs work, logs with run context, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.errors import WorkflowFailed
from pypgflow.status import RunStatus
from tests.cli.conftest import SAMPLE, eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _command() -> list[str]:
    script = Path(sys.executable).parent / "pypgflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pypgflow.cli"]


@pytest.fixture
def worker_process(pg_url: str, app: App) -> Iterator[subprocess.Popen[str]]:
    """`pypgflow worker` in its own process (run from the repository root), once registered."""
    process = subprocess.Popen(
        [
            *_command(), "worker", SAMPLE, "--queue", "default=4", "--poll-interval", "0.2",
            "--instance-id", "cli-subprocess", "--shutdown-timeout", "10",
        ],
        cwd=ROOT,
        env={**os.environ, DATABASE_URL_ENV: pg_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:

        def registered() -> bool:
            if process.poll() is not None:
                _, err = process.communicate()
                pytest.fail(f"the worker exited with {process.returncode}:\n{err}")
            return any(i.instance_id == "cli-subprocess" for i in app.instances())

        eventually(registered, timeout=30)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str]) -> tuple[float, str]:
    """SIGTERM the worker; how long it took to exit, and its stderr."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    return time.monotonic() - started, err


def test_worker_runs_work_and_exits_0_on_sigterm(
    worker_process: subprocess.Popen[str], app: App
) -> None:
    run = app.start("hello", {"name": "Process"})
    assert run.result(timeout=20) == {"name": "Process", "greeting": "HELLO, PROCESS"}
    assert {s.instance_id for s in app.get_run(run.id).steps} == {"cli-subprocess"}
    failed = app.start("broken", 7)
    with pytest.raises(WorkflowFailed):
        failed.result(timeout=20)

    elapsed, err = stop(worker_process)

    assert worker_process.returncode == 0, err
    assert elapsed < 5, err
    assert "INFO    pypgflow.worker: worker cli-subprocess started: queues default=4" in err
    assert f"WARNING pypgflow.worker [run={failed.id} step=explode#1]: step explode" in err
    assert f"ERROR   pypgflow.worker [run={failed.id} step=explode#2]: step explode" in err
    assert "received SIGTERM" in err
    assert "worker cli-subprocess stopped" in err
    assert "Traceback" not in err
    assert app.instances() == []  # deregistered on the way out


def test_sigterm_lets_a_running_step_finish(
    worker_process: subprocess.Popen[str], app: App
) -> None:
    run = app.start("nap", 1.0)
    eventually(lambda: run.status() is RunStatus.RUNNING, timeout=20)

    elapsed, err = stop(worker_process)

    assert worker_process.returncode == 0, err
    assert elapsed < 8, err
    assert "waiting up to 10 s for 1 running steps" in err
    assert run.status() is RunStatus.COMPLETED
    assert run.result() == 1.0
