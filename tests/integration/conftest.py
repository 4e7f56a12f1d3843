"""Fixtures of the multi-process integration tests: each test runs on every engine in turn (the
``database_url`` fixture of tests/conftest.py: a fresh PostgreSQL database, then a fresh SQLite
file), unless it is marked ``postgres_only`` with its reason (see ``helpers.postgres_only``); its
worker processes are always cleaned up."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pypgflow.app import App
from tests.integration import flows
from tests.integration.helpers import WorkerProcess


@pytest.fixture
def app(database_url: str) -> Iterator[App]:
    """The test's own App (starting runs, reading them) on this test's database."""
    with App(database_url, workflows=flows.ALL, instance_id="it-test") as test_app:
        flows.configure(test_app)
        yield test_app


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """The file every step of this test appends its events to (see flows.record)."""
    return tmp_path / "steps.jsonl"


@pytest.fixture
def spawn_worker(database_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn_worker(instance_id, **options)``: a started worker process on this test's database
    (or on ``url=``, e.g. through a proxy).

    Every process started is killed (SIGKILL) and reaped at teardown, whatever the test did; its
    stderr is echoed so that a failing test shows what the workers logged.
    """
    started: list[WorkerProcess] = []

    def spawn(instance_id: str, **options: Any) -> WorkerProcess:
        url = options.pop("url", database_url)
        worker = WorkerProcess(url, instance_id, tmp_path, **options)
        started.append(worker)
        return worker.start()

    try:
        yield spawn
    finally:
        for worker in started:
            worker.kill()
        for worker in started:
            sys.stderr.write(f"----- {worker} stderr -----\n{worker.stderr()}\n")
