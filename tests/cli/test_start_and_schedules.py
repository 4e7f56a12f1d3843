"""`start --run-at`, `start --wait` showing the run's steps as they move, `schedules delete`, and
shell completion as the docs describe it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.leader import Leader
from pypgflow.progress import Progress
from pypgflow.status import RunStatus
from tests.cli import schedule_app
from tests.cli.conftest import SAMPLE, Invoke
from tests.cli.test_errors import one_error
from tests.conftest import running_worker

PYPGFLOW = str(Path(sys.executable).with_name("pypgflow"))


# -- start --run-at -------------------------------------------------------------------------------


def test_start_run_at_takes_a_time_with_its_offset(cli: Invoke, app: App) -> None:
    result = cli("start", SAMPLE, "hello", "--input", "{}", "--run-at", "2030-01-01T09:30:00+02:00")
    assert result.exit_code == 0, result.output
    info = app.get_run(result.stdout.strip())
    assert info.scheduled_at == datetime(2030, 1, 1, 7, 30, tzinfo=UTC)
    utc = cli("start", SAMPLE, "hello", "--input", "{}", "--run-at", "2030-01-01T07:30:00Z")
    assert app.get_run(utc.stdout.strip()).scheduled_at == info.scheduled_at


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["--run-at", "2030-01-01T09:30"],
            "'2030-01-01T09:30' has no UTC offset: add one, e.g. 2030-01-01T09:30Z (UTC) or "
            "2030-01-01T09:30+02:00",
        ),
        (["--run-at", "tomorrow"], "'tomorrow' is not a time: give ISO 8601 with a UTC offset"),
        (["--run-at", "2h"], "'2h' is not a time"),  # no "ago" for a start
        (["--run-at", "2030-01-01T07:30:00Z", "--delay", "5"], "give --delay or --run-at"),
        (["--quiet"], "--quiet only applies with --wait"),
    ],
)
def test_start_refuses_unclear_times(cli: Invoke, app: App, args: list[str], problem: str) -> None:
    result = cli("start", SAMPLE, "hello", "--input", "{}", *args)
    assert result.exit_code == 2
    assert problem in result.stderr
    assert app.list_runs() == []  # nothing written


# -- start --wait ---------------------------------------------------------------------------------


def test_start_wait_shows_each_step_then_prints_the_result(cli: Invoke, app: App) -> None:
    with running_worker(app):
        result = cli("start", SAMPLE, "hello", "--input", '{"name": "World"}', "--wait")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"name": "World", "greeting": "HELLO, WORLD"}
    lines = [line.split() for line in result.stderr.splitlines()]
    assert lines[1] == ["time", "run", "step", "attempt", "status", "took"]
    events = [line[1:5] for line in lines[2:]]
    assert ["hello", "greet", "1", "completed"] in events
    assert ["hello", "shout", "1", "completed"] in events
    assert events[-1][:3] == ["hello", "(run)", "completed"]
    assert events.index(["hello", "greet", "1", "completed"]) < events.index(
        ["hello", "shout", "1", "completed"]
    )


def test_start_wait_shows_the_failed_attempts_and_exits_1(cli: Invoke, app: App) -> None:
    with running_worker(app):
        result = cli("start", SAMPLE, "broken", "--input", "[1]", "--wait", "--timeout", "20")
    assert result.exit_code == 1
    assert result.stdout == ""
    failures = [line for line in result.stderr.splitlines() if " failed " in line]
    assert "explode                  1  failed" in failures[0]
    assert failures[0].endswith("ValueError: boom: [1]; retry in 0.00 s")
    assert failures[1].endswith("ValueError: boom: [1]; no attempts left")
    assert "(run)                       failed: ValueError: boom: [1]" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("Error: workflow 'broken' run ")


def test_start_wait_says_a_non_retryable_failure_is_not_retried(cli: Invoke, app: App) -> None:
    with running_worker(app):
        result = cli("start", SAMPLE, "refused", "--input", "42", "--wait", "--timeout", "20")
    assert result.exit_code == 1
    # (a line saying it runs may come first, if the watch sees it running)
    failure = next(
        line for line in result.stderr.splitlines() if "  refuse  " in line and " failed " in line
    )
    assert failure.endswith("NonRetryable: no such account: 42; not retried: failed for good")


def test_start_wait_quiet_prints_the_result_only(cli: Invoke, app: App) -> None:
    with running_worker(app):
        result = cli("start", SAMPLE, "hello", "--input", '{"name": "Q"}', "--wait", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"name": "Q", "greeting": "HELLO, Q"}
    assert len(result.stderr.splitlines()) == 1  # "Started run ...": no progress


def test_start_wait_gives_up_after_the_timeout_while_showing_progress(
    cli: Invoke, app: App
) -> None:
    result = cli("start", SAMPLE, "nap", "--input", "5", "--wait", "--timeout", "0.5")
    assert result.exit_code == 1
    assert "did not finish within 0.5 s" in result.stderr
    run_id = result.stderr.split("Started run ", 1)[1].split()[0]
    assert app.get_run(run_id).status is RunStatus.PENDING


# -- schedules delete -----------------------------------------------------------------------------


def test_schedules_delete(cli: Invoke, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, pg_url)
    with schedule_app.create_app() as app:
        Leader(app).sync()
    result = cli("schedules", "delete", "nightly-report")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Schedule 'nightly-report' deleted.\n"
    assert [s["name"] for s in json.loads(cli("schedules", "--json").stdout)] == ["cleanup"]

    error = one_error(cli("schedules", "delete", "nightly-report"))
    assert error == "Error: no schedule named 'nightly-report' (stored: cleanup)"

    app_spec = "tests.cli.schedule_app:create_app"
    defined = cli("schedules", "delete", "cleanup", "--app", app_spec)
    assert defined.exit_code == 0, defined.output
    assert "Warning: 'cleanup' is still defined by this app" in defined.stderr
    assert cli("schedules").stdout.startswith("No schedules stored")


# -- shell completion -----------------------------------------------------------------------------


def completion(env: dict[str, str]) -> str:
    result = subprocess.run(
        [PYPGFLOW],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_scripts_as_documented(shell: str) -> None:
    script = completion({"_PYPGFLOW_COMPLETE": f"{shell}_source"})
    assert "_PYPGFLOW_COMPLETE" in script
    assert f"{shell}_complete" in script


def test_completion_offers_commands_and_options() -> None:
    words = completion(
        {"_PYPGFLOW_COMPLETE": "bash_complete", "COMP_WORDS": "pypgflow sch", "COMP_CWORD": "1"}
    )
    assert words.split() == ["plain,schedules"]
    words = completion(
        {
            "_PYPGFLOW_COMPLETE": "bash_complete",
            "COMP_WORDS": "pypgflow runs --sta",
            "COMP_CWORD": "2",
        }
    )
    assert words.split() == ["plain,--status"]


def test_the_progress_shows_a_skipped_step(pg_url: str) -> None:
    flow = Workflow("triage")

    @flow.step
    def classify(input: str) -> dict[str, bool]:
        return {"spam": input == "spam"}

    @flow.step(depends_on=[classify], when=lambda classify: classify["spam"])
    def quarantine(classify: dict[str, bool]) -> str:
        return "quarantined"

    with App(pg_url, workflows=[flow]) as app:
        run = app.start(flow, "hello")
        out = io.StringIO()
        progress = Progress(app, out, {run.id: "triage"}, time.perf_counter())
        with running_worker(app):
            run.result(timeout=20)
        assert progress.poll()
    events = [line.split()[1:5] for line in out.getvalue().splitlines()]
    assert ["triage", "classify", "1", "completed"] in events
    assert ["triage", "quarantine", "skipped"] in [e[:3] for e in events]
    assert events[-1][:3] == ["triage", "(run)", "completed"]
