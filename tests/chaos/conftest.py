"""The fault scenarios (``make chaos``): minutes long, so not part of ``make test`` (see
tests/conftest.py). Each scenario prints its figures and fails on any violation; the figures of
the whole session are printed at its end and written to ``chaos-report.md`` (or the file
PYPGFLOW_CHAOS_REPORT names)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypgflow.app import App
from tests.chaos import audit
from tests.integration import flows
from tests.integration.conftest import log_path, spawn_worker

__all__ = ["app", "figures", "log_path", "spawn_worker"]

REPORT = Path(os.environ.get("PYPGFLOW_CHAOS_REPORT", "chaos-report.md"))
_LINES: list[str] = []


class Figures:
    """What a scenario measured, one line at a time, printed and kept for the report."""

    def __init__(self, title: str) -> None:
        self.title = title
        _LINES.append(f"\n### {title}\n")

    def add(self, line: str) -> None:
        print(f"  {line}", flush=True)
        _LINES.append(f"- {line}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.name)


@pytest.fixture
def app(database_url: str) -> Iterator[App]:
    """The scenario's own App, on a fresh database with the audit triggers installed."""
    audit.install(database_url)
    with App(database_url, workflows=flows.ALL, instance_id="chaos-test") as test_app:
        flows.configure(test_app)
        yield test_app


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _LINES:
        return
    text = "# Fault scenarios: figures of the last `make chaos`\n" + "\n".join(_LINES) + "\n"
    REPORT.write_text(text)
    terminalreporter.write_sep("=", "fault scenarios: figures")
    terminalreporter.write_line(text)
    terminalreporter.write_line(f"(written to {REPORT})")
