"""Fixtures for the CLI tests: invoke `pypgflow` in-process against this test's database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest
from click.testing import CliRunner, Result

from pypgflow.app import App
from pypgflow.cli import main
from pypgflow.defaults import DATABASE_URL_ENV
from tests.cli import sample_app

SAMPLE = "tests.cli.sample_app:create_app"


class Invoke(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result: ...


@pytest.fixture
def cli(pg_url: str) -> Invoke:
    """``cli("runs", "--status", "failed")``: run the command with PYPGFLOW_DATABASE_URL set to
    this test's database; stdout and stderr are apart in ``result.stdout`` / ``result.stderr``."""
    runner = CliRunner()

    def invoke(
        *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        return runner.invoke(
            main,
            list(args),
            input=input,
            env={DATABASE_URL_ENV: pg_url, **(env or {})},
            catch_exceptions=False,
        )

    return invoke


@pytest.fixture
def app(pg_url: str) -> Iterator[App]:
    """The sample app on this test's database (the one the CLI loads from SAMPLE)."""
    with App(pg_url, workflows=sample_app.WORKFLOWS) as the_app:
        yield the_app


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, "condition not met in time"
            return value
        time.sleep(0.05)
