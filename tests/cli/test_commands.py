"""`pypgflow` commands against a real database: migrate, start, runs, run, retry, cancel, instances."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from pypgflow.app import App, Run
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.engines.sqlfile import migration_files
from pypgflow.status import RunStatus
from pypgflow.worker import Worker
from tests.cli import sample_app
from tests.cli.conftest import SAMPLE, Invoke, eventually
from tests.conftest import running_worker


def finished(app: App, run_id: str) -> None:
    eventually(lambda: app.get_run(run_id).status.finished)


# -- migrate --------------------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_idempotent(cli: Invoke, empty_pg_url: str) -> None:
    url = ["--database-url", empty_pg_url]
    check = cli(*url, "migrate", "--check")
    assert check.exit_code == 1
    assert "run `pypgflow migrate`" in check.stderr

    first = cli(*url, "migrate")
    assert first.exit_code == 0, first.output
    versions = [v for v, _, _ in migration_files("pypgflow.engines.postgres.migrations")]
    applied = ", ".join(map(str, versions))
    assert (
        f"Migrated schema 'pypgflow' at version {versions[-1]} (applied: {applied})" in first.stdout
    )

    again = cli(*url, "migrate")
    assert again.exit_code == 0, again.output
    assert "already up to date" in again.stdout

    assert cli(*url, "migrate", "--check").exit_code == 0
    assert cli(*url, "runs").stdout == "No runs found.\n"


def test_schema_option_selects_another_schema(cli: Invoke, empty_pg_url: str) -> None:
    url = ["--database-url", empty_pg_url]
    result = cli(*url, "--schema", "flows", "migrate")
    assert result.exit_code == 0, result.output
    assert "'flows'" in result.stdout
    assert cli(*url, "--schema", "flows", "runs").exit_code == 0
    other = cli(*url, "runs")  # the default schema is still missing
    assert other.exit_code == 1
    assert "schema 'pypgflow' is missing" in other.stderr


# -- start ----------------------------------------------------------------------------------------


def test_start_prints_the_run_id_and_stores_the_options(cli: Invoke, app: App) -> None:
    result = cli(
        "start", SAMPLE, "hello",
        "--input", '{"name": "World"}', "--queue", "urgent", "--priority", "3", "--delay", "60",
        "--idempotency-key", "order-42",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run_id = result.stdout.strip()
    uuid.UUID(run_id)
    info = app.get_run(run_id)
    assert info.status is RunStatus.PENDING
    assert info.input == {"name": "World"}
    assert (info.queue, info.priority, info.idempotency_key) == ("urgent", 3, "order-42")
    assert info.scheduled_at is not None
    assert (info.scheduled_at - info.created_at).total_seconds() > 50

    again = cli(
        "start", SAMPLE, "hello", "--input", '{"name": "World"}', "--idempotency-key", "order-42"
    )  # fmt: skip
    assert again.stdout.strip() == run_id
    other = cli("start", SAMPLE, "hello", "--input", "{}", "--idempotency-key", "order-42")
    assert other.exit_code != 0
    assert f"is held by run {run_id}" in other.output


def test_start_uses_the_workflows_own_queue_unless_told_otherwise(cli: Invoke, app: App) -> None:
    queued = "tests.cli.sample_app:queued_app"
    result = cli("start", queued, "hello", "--input", '{"name": "A"}')
    assert result.exit_code == 0, result.output
    assert app.get_run(result.stdout.strip()).queue == "greetings"
    result = cli("start", queued, "hello", "--input", '{"name": "B"}', "--queue", "urgent")
    assert app.get_run(result.stdout.strip()).queue == "urgent"
    result = cli("start", SAMPLE, "hello", "--input", '{"name": "C"}')
    assert app.get_run(result.stdout.strip()).queue == "default"


def test_start_reads_the_input_from_a_file_or_stdin(cli: Invoke, app: App, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"name": "File"}', encoding="utf-8")
    from_file = cli("start", SAMPLE, "hello", "--input", f"@{path}")
    assert from_file.exit_code == 0, from_file.output
    assert app.get_run(from_file.stdout.strip()).input == {"name": "File"}

    from_stdin = cli("start", SAMPLE, "hello", "--input", "-", input='{"name": "Stdin"}\n')
    assert from_stdin.exit_code == 0, from_stdin.output
    assert app.get_run(from_stdin.stdout.strip()).input == {"name": "Stdin"}

    no_input = cli("start", "tests.cli.sample_app:app", "broken")
    assert no_input.exit_code == 0, no_input.output
    assert app.get_run(no_input.stdout.strip()).input is None


def test_start_wait_prints_the_result_as_json(cli: Invoke, app: App) -> None:
    with running_worker(app):
        result = cli(
            "start", SAMPLE, "hello", "--input", '{"name": "World"}', "--wait", "--timeout", "20"
        )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"name": "World", "greeting": "HELLO, WORLD"}
    assert "Started run" in result.stderr


def test_start_wait_on_a_failing_run_exits_1_with_the_error(cli: Invoke, app: App) -> None:
    with running_worker(app):
        result = cli("start", SAMPLE, "broken", "--input", "[1]", "--wait", "--timeout", "20")
    assert result.exit_code == 1
    assert result.stdout == ""
    error = result.stderr.splitlines()[-1]
    assert error.startswith("Error: workflow 'broken' run ")
    assert "failed at step 'explode' after 2 attempts: ValueError: boom: [1]" in error
    assert "details: pypgflow run" in error
    assert "Traceback" not in result.stderr


def test_start_wait_gives_up_after_the_timeout(cli: Invoke, app: App) -> None:
    result = cli("start", SAMPLE, "hello", "--input", '{"name": "x"}', "--wait", "--timeout", "0.2")
    assert result.exit_code == 1
    assert "did not finish within 0.2 s" in result.stderr
    run_id = result.stderr.split("Started run ", 1)[1].split()[0]
    assert app.get_run(run_id).status is RunStatus.PENDING  # still there for a worker


def test_start_wait_on_a_cancelled_run_exits_1(
    cli: Invoke, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = App.start

    def start_and_cancel(self: App, *args: object, **kwargs: object) -> object:
        run = original(self, *args, **kwargs)  # type: ignore[arg-type]
        run.cancel()
        return run

    monkeypatch.setattr(App, "start", start_and_cancel)
    result = cli("start", SAMPLE, "hello", "--input", "{}", "--wait")
    assert result.exit_code == 1
    assert "was cancelled" in result.stderr


# -- runs -----------------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_filters(cli: Invoke, app: App) -> None:
    with running_worker(app):
        done = app.start("hello", {"name": "a"})
        failed = app.start("broken", 1)
        finished(app, done.id)
        finished(app, failed.id)
    pending = app.start("hello", {"name": "b"}, delay=3600)

    table = cli("runs")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"]
    assert [line.split()[0] for line in lines[1:]] == [pending.id, failed.id, done.id]
    assert lines[1].split()[1:3] == ["hello", "pending"]
    assert lines[1].split()[-1] == "-"
    assert lines[2].split()[1:3] == ["broken", "failed"]
    assert lines[3].split()[-1].endswith(("ms", "s"))

    only_failed = cli("runs", "--status", "failed")
    assert [line.split()[0] for line in only_failed.stdout.splitlines()[1:]] == [failed.id]
    assert cli("runs", "--status", "FAILED").stdout == only_failed.stdout

    hello = cli("runs", "--workflow", "hello", "--limit", "1")
    assert [line.split()[0] for line in hello.stdout.splitlines()[1:]] == [pending.id]

    assert cli("runs", "--status", "cancelled").stdout == "No runs found.\n"

    as_json = json.loads(cli("runs", "--workflow", "hello", "--json").stdout)
    assert [run["id"] for run in as_json] == [pending.id, done.id]
    assert as_json[1]["status"] == "completed"
    assert as_json[1]["output"] == {"name": "a", "greeting": "HELLO, A"}
    assert as_json[1]["duration"] >= 0

    bad = cli("runs", "--status", "exploded")
    assert bad.exit_code == 2
    assert "'exploded' is not one of" in bad.stderr


# -- run RUN_ID -----------------------------------------------------------------------------------


def test_run_shows_the_steps_and_each_failed_attempt(cli: Invoke, app: App) -> None:
    with running_worker(app) as worker:
        run = app.start("broken", {"n": 1})
        finished(app, run.id)
    result = cli("run", run.id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    header = dict(line.split(None, 1) for line in out.split("\n\n")[0].splitlines() if line.strip())
    assert header["Run"] == run.id
    assert header["Workflow"] == "broken"
    assert header["Status"] == "failed"
    assert header["Input"] == '{"n": 1}'
    assert header["Error"] == "step 'explode' after 2 attempts: ValueError: boom: {'n': 1}"
    assert header["Duration"] != "-"

    steps = [line.split() for line in out.split("\n\n")[1].splitlines()]
    assert steps[0] == ["STEP", "STATUS", "ATTEMPTS", "DURATION", "INSTANCE"]
    assert steps[1][:3] == ["prepare", "completed", "1"]
    assert steps[2][:3] == ["explode", "failed", "2"]
    assert steps[2][-1] == worker.instance_id

    attempts = out.split("\n\n")[2].splitlines()
    assert attempts == [
        "Failed attempts:",
        f"  explode attempt 1 on {worker.instance_id}: ValueError: boom: {{'n': 1}}",
        f"  explode attempt 2 on {worker.instance_id}: ValueError: boom: {{'n': 1}}",
    ]
    assert "Traceback" not in out

    with_tracebacks = cli("run", run.id, "--traceback").stdout
    assert with_tracebacks.count("Traceback (most recent call last):") == 2
    assert 'raise ValueError(f"boom: {data}")' in with_tracebacks

    data = json.loads(cli("run", run.id, "--json").stdout)
    assert data["status"] == "failed"
    assert data["error"]["type"] == "ValueError"
    assert [s["name"] for s in data["steps"]] == ["prepare", "explode"]
    assert data["steps"][0]["output"] == {"n": 1}
    assert [e["attempt"] for e in data["steps"][1]["errors"]] == [1, 2]
    assert "Traceback" in data["steps"][1]["errors"][0]["traceback"]


def test_run_of_a_completed_run_shows_its_output(cli: Invoke, app: App) -> None:
    with running_worker(app):
        run = app.start("hello", {"name": "x" * 500})
        finished(app, run.id)
    out = cli("run", run.id).stdout
    assert "Status    completed" in out
    output_line = next(line for line in out.splitlines() if line.startswith("Output"))
    assert output_line.endswith("characters; --json shows all)")  # long values are shortened
    assert len(output_line) < 250
    assert "Failed attempts" not in out


# -- retry and cancel -----------------------------------------------------------------------------


def test_retry_resumes_a_failed_run(cli: Invoke, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sample_app.fixed, "done", False)
    with running_worker(app):
        run = app.start("fragile")
        finished(app, run.id)
        assert app.get_run(run.id).status is RunStatus.FAILED

        monkeypatch.setitem(sample_app.fixed, "done", True)
        result = cli("retry", run.id)
        assert result.exit_code == 0, result.output
        assert f"Run {run.id} resumed" in result.stdout
        assert run.result(timeout=10) == "fixed"

    again = cli("retry", run.id)
    assert again.exit_code == 1
    assert again.stderr == (
        f"Error: run {run.id} is completed: only failed or cancelled runs can be retried\n"
    )


def test_cancel_and_retry_a_pending_run(cli: Invoke, app: App) -> None:
    run = app.start("hello", {"name": "x"})
    result = cli("cancel", run.id)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Run {run.id} cancelled.\n"
    assert run.status() is RunStatus.CANCELLED

    twice = cli("cancel", run.id)
    assert twice.exit_code == 0
    assert "already cancelled" in twice.stdout

    assert cli("retry", run.id).exit_code == 0
    assert run.status() is RunStatus.PENDING
    with running_worker(app):
        assert run.result(timeout=10) == {"name": "x", "greeting": "HELLO, X"}

    finished_already = cli("cancel", run.id)
    assert finished_already.exit_code == 1
    assert finished_already.stderr == (
        f"Error: run {run.id} already finished (completed): not cancelled\n"
    )


# -- instances ------------------------------------------------------------------------------------


def test_instances_lists_running_workers(cli: Invoke, app: App) -> None:
    assert cli("instances").stdout == "No worker instances registered.\n"
    with running_worker(app, {"default": 3, "emails": 1}) as worker:
        eventually(app.instances)
        result = cli("instances")
        data = json.loads(cli("instances", "--json").stdout)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "INSTANCE", "HOST", "PID", "STATUS", "QUEUES", "LOAD", "STARTED", "LAST", "HEARTBEAT",
    ]  # fmt: skip
    row = lines[1].split()
    assert row[0] == worker.instance_id
    assert row[3:6] == ["online", "default=3,emails=1", "0"]
    assert row[-1] == "ago)"
    assert [(i["instance_id"], i["status"], i["queues"]) for i in data] == [
        (worker.instance_id, "online", {"default": 3, "emails": 1})
    ]
    assert isinstance(data[0]["pid"], int)
    assert cli("instances").stdout == "No worker instances registered.\n"  # deregistered


def test_instances_honours_the_stale_after_of_the_app(cli: Invoke, app: App) -> None:
    """Without --stale-after, `instances --app` counts an instance offline after the app's own
    App(stale_after=), not after the library's default."""
    app.engine.register_instance("quiet", hostname="h", pid=1, queues={"default": 1})
    impatient = "tests.cli.sample_app:impatient_app"  # App(stale_after=0.5)

    def status(*args: str) -> str:
        result = cli("instances", "--json", *args)
        assert result.exit_code == 0, result.output
        [instance] = json.loads(result.stdout)
        return str(instance["status"])

    eventually(lambda: status("--app", impatient) == "offline")
    assert "offline" in cli("instances", "--app", impatient).stdout.splitlines()[1].split()
    assert status() == "online"  # no app: the default stale_after
    assert status("--app", impatient, "--stale-after", "60") == "online"  # the option wins


def test_app_option_takes_the_database_from_the_app(cli: Invoke, app: App) -> None:
    run = app.start("hello", {"name": "x"})
    result = cli("runs", "--app", "tests.cli.sample_app:app")
    assert result.exit_code == 0, result.output
    assert run.id in result.stdout
    assert cli("run", run.id, "--app", SAMPLE).exit_code == 0


def test_worker_class_is_what_the_cli_runs(cli: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pypgflow worker` passes its options to the Worker (run here without blocking)."""
    seen: dict[str, object] = {}

    def fake_run(self: Worker) -> None:
        seen.update(
            queues=self.queues,
            poll=self.poll_interval,
            heartbeat=self.heartbeat_interval,
            shutdown=self.shutdown_timeout,
            instance=self.instance_id,
            stale=self.stale_after,
        )

    monkeypatch.setattr(Worker, "run", fake_run)
    result = cli(
        "worker", SAMPLE, "-q", "default=4", "--queue", "emails", "--concurrency", "2",
        "--poll-interval", "0.5", "--heartbeat-interval", "2", "--shutdown-timeout", "7",
        "--instance-id", "worker-a", "--log-level", "warning", "--stale-after", "12",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == {
        "queues": {"default": 4, "emails": 2},
        "poll": 0.5,
        "heartbeat": 2.0,
        "shutdown": 7.0,
        "instance": "worker-a",
        "stale": 12.0,
    }


def test_database_url_option_reaches_an_app_that_reads_the_environment(
    cli: Invoke, app: App, pg_url: str
) -> None:
    result = cli("--database-url", pg_url, "start", SAMPLE, "hello", env={DATABASE_URL_ENV: None})
    assert result.exit_code == 0, result.output
    assert app.get_run(result.stdout.strip()).workflow == "hello"
    assert DATABASE_URL_ENV not in os.environ  # exported only while the app was made


def test_warns_when_the_app_ignores_the_global_options(cli: Invoke, pg_url: str) -> None:
    result = cli(
        "--schema", "other", "runs", "--app", "tests.cli.sample_app:pinned_app",
        env={"SAMPLE_PINNED_URL": pg_url + " application_name=pinned"},
    )  # fmt: skip
    assert result.stderr.splitlines()[:2] == [
        "Warning: tests.cli.sample_app:pinned_app connects to its own database, not to the "
        "--database-url (PYPGFLOW_DATABASE_URL) given",
        "Warning: tests.cli.sample_app:pinned_app uses schema 'pinned', not --schema 'other'",
    ]
    assert "schema 'pinned' is missing" in result.stderr  # the app's settings are the ones used


def test_interrupting_start_wait_leaves_the_run_going(
    cli: Invoke, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Run, timeout: float | None = None) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "result", interrupted)
    result = cli("start", SAMPLE, "hello", "--input", "{}", "--wait")
    assert result.exit_code == 130
    run_id = result.stderr.split("Started run ", 1)[1].split()[0]
    assert f"Stopped waiting; run {run_id} goes on (see: pypgflow run {run_id})." in result.stderr
    assert app.get_run(run_id).status is RunStatus.PENDING
