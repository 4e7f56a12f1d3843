"""`pypgflow signal RUN_ID NAME --data JSON`: the waiting step completes with the data; a signal
sent early is kept; `pypgflow run` says what a step waits for; bad data, unknown and finished
runs exit 1 with a message naming the problem."""

from __future__ import annotations

import re

from pypgflow.app import App
from pypgflow.status import RunStatus, StepStatus
from tests.cli.conftest import SAMPLE, Invoke, eventually
from tests.conftest import running_worker


def test_signal_completes_the_waiting_step_and_run_shows_the_wait(cli: Invoke, app: App) -> None:
    run = app.start("gated", {"order": 7})
    with running_worker(app):
        eventually(
            lambda: (
                next(s for s in app.get_run(run.id).steps if s.name == "approval").status
                is StepStatus.READY
            )
        )
        shown = cli("run", run.id[:13])
        assert shown.exit_code == 0, shown.output
        assert "Waiting:" in shown.stdout
        assert "for signal 'approved' (no timeout) since" in shown.stdout
        result = cli("signal", run.id[:13], "approved", "--data", '{"by": "ana"}', "--app", SAMPLE)
        assert result.exit_code == 0, result.output
        assert f"Signal 'approved' sent to run {run.id}: step 'approval' completed." in (
            result.stdout
        )
        assert run.result(timeout=10) == {"asked": {"order": 7}, "approval": {"by": "ana"}}
    assert "Waiting:" not in cli("run", run.id).stdout


def test_an_early_signal_is_kept(cli: Invoke, app: App) -> None:
    run = app.start("gated", 1)
    result = cli("signal", run.id, "approved")
    assert result.exit_code == 0, result.output
    assert "kept for run" in result.stdout
    with running_worker(app):
        assert run.result(timeout=10) == {"asked": 1, "approval": None}


def test_signal_errors_name_the_problem(cli: Invoke, app: App) -> None:
    run = app.start("gated", 1)
    bad = cli("signal", run.id, "approved", "--data", "{not json")
    assert bad.exit_code == 2
    assert "--data" in bad.stderr
    assert "not JSON" in bad.stderr
    app.cancel(run.id)
    finished = cli("signal", run.id, "approved")
    assert finished.exit_code == 1
    assert "is cancelled: it takes no more signals" in finished.stderr
    assert app.get_run(run.id).status is RunStatus.CANCELLED
    unknown = cli("signal", "0190a8a2-0000-7000-8000-000000000000", "approved")
    assert unknown.exit_code == 1
    assert "no run" in unknown.stderr.lower()


def test_fork_prints_the_new_run_which_keeps_the_steps_before(cli: Invoke, app: App) -> None:
    run = app.start("hello", {"name": "Ana"})
    with running_worker(app):
        run.result(timeout=10)
        result = cli("fork", run.id[:13], "--from", "shout", "--app", SAMPLE)
        assert result.exit_code == 0, result.output
        new_id = result.stdout.strip()
        assert app.run(new_id).result(timeout=10) == {"name": "Ana", "greeting": "HELLO, ANA"}
    info = app.get_run(new_id)
    assert info.forked_from == run.id
    assert re.search(rf"^Forked from +{run.id}$", cli("run", new_id).stdout, re.MULTILINE)
    assert next(s for s in info.steps if s.name == "greet").attempts == 0
    bad = cli("fork", run.id, "--from", "nope")
    assert bad.exit_code == 1
    assert "no step 'nope' to fork from" in bad.stderr
