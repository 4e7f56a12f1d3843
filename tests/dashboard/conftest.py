"""The dashboard's fixtures: an App with a few workflows on each engine's fresh database, runs in
every state, and a test client holding the token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from pypgflow import Backoff, Workflow
from pypgflow.app import App
from pypgflow.dashboard import create_app
from tests.conftest import running_worker

TOKEN = "test-token-1234"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: a run input that must never reach a page as markup
SCRIPT = "<script>alert(1)</script>"


def flows() -> list[Workflow]:
    greet = Workflow("greet")

    @greet.step
    def hello(input: Any) -> Any:
        return {"greeting": f"hello {input.get('name') if isinstance(input, dict) else input}"}

    broken = Workflow("broken", max_attempts=1, backoff=Backoff(base=0.01, jitter=0))

    @broken.step
    def prepare(input: Any) -> Any:
        return input

    @broken.step
    def explode(prepare: Any) -> Any:
        raise ValueError(f"cannot handle {prepare!r}")

    return [greet, broken]


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture
def app(database_url: str) -> Iterator[App]:
    app = App(database_url, workflows=flows())
    yield app
    app.close()


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with TestClient(create_app(app, token=TOKEN), base_url="http://dash.test") as client:
        yield client


@pytest.fixture
def stored(app: App) -> dict[str, str]:
    """Runs in each final state and one pending, their ids by label; the failed one's input is
    markup."""
    done = app.start("greet", {"name": SCRIPT})
    failed = app.start("broken", {"note": SCRIPT})
    with running_worker(app):
        done.result(timeout=15)
        wait_for(lambda: failed.status().finished)
    cancelled = app.start("greet", {"name": "later"}, delay=3600)
    app.cancel(cancelled.id)
    pending = app.start("greet", {"name": "waiting"}, delay=3600)
    return {
        "completed": done.id,
        "failed": failed.id,
        "cancelled": cancelled.id,
        "pending": pending.id,
    }
