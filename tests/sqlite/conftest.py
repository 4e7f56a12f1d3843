"""Fixtures of the SQLite engine tests: real database files in tmp_path, no server needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.sqlite import SqliteEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A migrated SQLite database file for one test."""
    path = str(tmp_path / "flows.db")
    engine = SqliteEngine(path)
    engine.migrate()
    engine.close()
    return path


@pytest.fixture
def make_app(db_path: str) -> Iterator[Callable[..., App]]:
    """``make_app(*workflows, **options)``: an App on this test's SQLite file, closed afterwards."""
    apps: list[App] = []

    def make(*workflows: Workflow, **options: Any) -> App:
        app = App(engine=SqliteEngine(db_path), workflows=workflows, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


class Processes:
    """Worker subprocesses of one test: every one is killed at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def worker(self, db: str, *args: str) -> subprocess.Popen[bytes]:
        index = len(self.started)
        with open(self.tmp_path / f"worker-{index}.stderr", "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.sqlite.worker_proc", "--db", db, *args],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO), "PYPGFLOW_INSTANCE_ID": f"w{index}"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.started.append(proc)
        return proc

    def stop_all(self, timeout: float = 15.0) -> list[int | None]:
        """SIGTERM (graceful stop), then SIGKILL whatever is left; the exit codes."""
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.started:
            try:
                codes.append(proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
                codes.append(None)
        return codes

    def stderr(self) -> str:
        return "\n".join(
            (self.tmp_path / f"worker-{i}.stderr").read_text(errors="replace")
            for i in range(len(self.started))
        )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        for proc in procs.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
