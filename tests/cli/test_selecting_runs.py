"""Choosing runs on the command line: ids by unique prefix, the global options after the command,
`runs --since/--until` and its cursor pages, and `retry`/`cancel` of every run matching filters
(with a confirmation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.ids import short_ids
from pypgflow.status import RunStatus
from tests.cli import sample_app
from tests.cli.conftest import SAMPLE, Invoke
from tests.cli.test_errors import one_error


def common_start(ids: list[str]) -> str:
    """The longest start all of ``ids`` share (UUIDv7s made together share their time)."""
    return next(ids[0][:n] for n in range(36, 0, -1) if all(i[:n] == ids[0][:n] for i in ids))


def next_cursor(stderr: str) -> str | None:
    marker = "the next page is --after "
    return stderr.split(marker, 1)[1].split()[0] if marker in stderr else None


# -- run ids by prefix ----------------------------------------------------------------------------


def test_run_retry_and_cancel_take_a_unique_start_of_the_id(cli: Invoke, app: App) -> None:
    runs = app.start_many(sample_app.hello, [{"name": "A"}, {"name": "B"}])
    short = short_ids(run.id for run in runs)
    first, second = (run.id for run in runs)

    shown = cli("run", short[first])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0].split() == ["Run", first]
    assert json.loads(cli("run", short[second].upper(), "--json").stdout)["id"] == second

    cancelled = cli("cancel", short[first])
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout == f"Run {first} cancelled.\n"
    retried = cli("retry", short[first])
    assert retried.stdout == f"Run {first} resumed: its unfinished steps are queued again.\n"
    assert app.get_run(first).status is RunStatus.PENDING
    assert app.get_run(second).status is RunStatus.PENDING


def test_an_ambiguous_start_of_an_id_names_the_runs_and_changes_nothing(
    cli: Invoke, app: App
) -> None:
    runs = app.start_many(sample_app.hello, [{"name": "A"}, {"name": "B"}])
    prefix = common_start([run.id for run in runs])
    for command in ("run", "retry", "cancel"):
        error = one_error(cli(command, prefix))
        assert error.startswith(f"Error: {prefix!r} is the start of 2 run ids (")
        assert all(run.id in error for run in runs)
        assert error.endswith("give more of the id")
    assert {app.get_run(run.id).status for run in runs} == {RunStatus.PENDING}


def test_several_ids_are_all_checked_before_any_is_acted_on(cli: Invoke, app: App) -> None:
    runs = app.start_many(sample_app.hello, [{"name": "A"}, {"name": "B"}])
    short = short_ids(run.id for run in runs)
    missing = "0" * 12
    error = one_error(cli("cancel", short[runs[0].id], missing))
    assert error == f"Error: no run id starts with {missing!r}"
    assert app.get_run(runs[0].id).status is RunStatus.PENDING  # nothing was cancelled

    both = cli("cancel", *short.values())
    assert both.exit_code == 0, both.output
    assert both.stdout == "".join(f"Run {run.id} cancelled.\n" for run in runs)
    again = cli("retry", *short.values(), short[runs[0].id])  # a repeat is acted on once
    assert again.stdout.count("resumed") == 2


def test_acting_on_several_runs_reports_each_refusal(cli: Invoke, app: App) -> None:
    done = app.start(sample_app.hello, {"name": "A"})
    app.cancel(done.id)
    pending = app.start(sample_app.hello, {"name": "B"})
    result = cli("retry", done.id, pending.id)
    assert result.exit_code == 1
    assert result.stdout == f"Run {done.id} resumed: its unfinished steps are queued again.\n"
    assert (
        f"Error: run {pending.id} is pending: only failed or cancelled runs can be retried"
        in result.stderr
    )
    assert result.stderr.rstrip().endswith("Error: 1 of 2 runs not retried")


# -- global options after the command -------------------------------------------------------------


def test_global_options_may_follow_the_command(cli: Invoke, app: App, pg_url: str) -> None:
    run = app.start(sample_app.hello, {"name": "A"})
    no_env: dict[str, str | None] = {DATABASE_URL_ENV: None}
    after = cli("runs", "--database-url", pg_url, "--json", env=no_env)
    assert after.exit_code == 0, after.output
    assert [r["id"] for r in json.loads(after.stdout)] == [run.id]
    # after the command beats before it, which beats the environment
    elsewhere = "sqlite:///nowhere-to-be-found.db"
    both = cli("--database-url", elsewhere, "run", run.id[:13], "--database-url", pg_url)
    assert both.exit_code == 0, both.output
    assert cli("run", run.id, env={DATABASE_URL_ENV: elsewhere}).exit_code == 1

    error = one_error(cli("runs", "--schema", "flows"))
    assert "schema 'flows' is missing" in error
    error = one_error(cli("schedules", "delete", "x", "--schema", "flows"))
    assert "schema 'flows' is missing" in error


def test_app_may_come_before_the_command(cli: Invoke) -> None:
    error = one_error(cli("--app", "tests.cli.sample_app:not_an_app", "runs"))
    assert "is not a pypgflow App" in error
    result = cli("--app", "tests.cli.sample_app:not_an_app", "start", SAMPLE, "hello")
    assert result.exit_code == 0, result.output
    assert (
        "Warning: --app tests.cli.sample_app:not_an_app is not used: this command runs "
        f"{SAMPLE}" in result.stderr
    )


def test_every_command_offers_the_global_options() -> None:
    from pypgflow.cli import main

    def commands(group: object, path: str) -> list[tuple[str, object]]:
        found = []
        for name, command in getattr(group, "commands", {}).items():
            found.append((f"{path} {name}", command))
            found += commands(command, f"{path} {name}")
        return found

    for name, command in commands(main, "pypgflow"):
        opts = {opt for param in command.params for opt in param.opts}  # type: ignore[attr-defined]
        assert {"--database-url", "--schema"} <= opts, name


# -- runs: time ranges and pages ------------------------------------------------------------------


def test_runs_pages_through_every_run_with_the_cursor(cli: Invoke, app: App) -> None:
    ids = [run.id for run in app.start_many(sample_app.hello, [{"name": str(i)} for i in range(5)])]
    newest_first = sorted(ids, reverse=True)
    seen: list[str] = []
    args = ["runs", "--limit", "2", "--json"]
    cursor = None
    for expected in (2, 2, 1):
        page = cli(*args, *(["--after", cursor] if cursor else []))
        assert page.exit_code == 0, page.output
        found = [r["id"] for r in json.loads(page.stdout)]
        assert len(found) == expected
        seen += found
        cursor = next_cursor(page.stderr)
    assert cursor is None
    assert seen == newest_first

    table = cli("runs", "--limit", "3")
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == newest_first[:3]
    assert next_cursor(table.stderr) is not None
    error = one_error(cli("runs", "--after", "not-a-cursor"))
    assert "invalid cursor 'not-a-cursor'" in error


def test_runs_since_and_until(cli: Invoke, app: App) -> None:
    run = app.start(sample_app.hello, {"name": "A"})
    created = app.get_run(run.id).created_at
    before, after = created - timedelta(seconds=1), created + timedelta(seconds=1)

    def listed(*args: str) -> list[str]:
        result = cli("runs", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["id"] for r in json.loads(result.stdout)]

    assert listed("--since", "1h") == [run.id]
    assert listed("--until", "1h") == []
    assert listed("--since", before.isoformat(), "--until", after.isoformat()) == [run.id]
    assert listed("--since", after.isoformat()) == []
    assert listed("--until", before.astimezone(UTC).isoformat().replace("+00:00", "Z")) == []
    assert listed("--since", "1d", "--status", "pending", "--status", "failed") == [run.id]
    assert listed("--since", "1d", "--status", "failed") == []
    assert listed("--since", "2w", "--workflow", "hello") == [run.id]

    bad = cli("runs", "--since", "2025-06-01T09:30:00")
    assert bad.exit_code == 2
    assert "'2025-06-01T09:30:00' has no UTC offset: add one, e.g. 2025-06-01T09:30:00Z" in (
        bad.stderr
    )
    bad = cli("runs", "--until", "yesterday")
    assert bad.exit_code == 2
    assert "'yesterday' is not a time: give ISO 8601 with a UTC offset" in bad.stderr
    empty = cli("runs", "--since", "1h", "--until", "2h")
    assert empty.exit_code == 2
    assert "is not before --until" in empty.stderr


# -- retry and cancel by filters ------------------------------------------------------------------


def test_cancel_by_filters_asks_first_and_says_how_many(cli: Invoke, app: App) -> None:
    hello = app.start_many(sample_app.hello, [{"name": str(i)} for i in range(3)])
    other = app.start(sample_app.nap, 0.1)

    declined = cli("cancel", "--workflow", "hello", "--status", "pending", input="n\n")
    assert declined.exit_code == 1
    assert "Cancel 3 runs (pending runs of workflow 'hello')? [y/N]" in declined.stderr
    assert {app.get_run(run.id).status for run in hello} == {RunStatus.PENDING}

    accepted = cli("cancel", "--workflow", "hello", "--status", "pending", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stdout == "Cancelled 3 of 3 runs.\n"
    assert {app.get_run(run.id).status for run in hello} == {RunStatus.CANCELLED}
    assert app.get_run(other.id).status is RunStatus.PENDING

    none_left = cli("cancel", "--workflow", "hello", "--yes")
    assert none_left.stdout == (
        "No pending or running runs of workflow 'hello': nothing to cancel.\n"
    )


def test_retry_by_filters_with_yes(cli: Invoke, app: App) -> None:
    runs = app.start_many(sample_app.hello, [{"name": str(i)} for i in range(2)])
    kept = app.start(sample_app.hello, {"name": "kept"})
    for run in [*runs, kept]:
        app.cancel(run.id)
    since = (app.get_run(runs[0].id).created_at - timedelta(seconds=1)).isoformat()
    until = app.get_run(kept.id).created_at.isoformat()  # kept is the newest: left out
    assert kept.id > max(run.id for run in runs)

    nothing = cli("retry", "--workflow", "hello", "--yes")  # failed runs by default: none
    assert nothing.stdout == "No failed runs of workflow 'hello': nothing to retry.\n"

    result = cli("retry", "--status", "cancelled", "--since", since, "--until", until, "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Retried 2 of 2 runs.\n"
    assert result.stderr == ""  # no question asked
    assert {app.get_run(run.id).status for run in runs} == {RunStatus.PENDING}
    assert app.get_run(kept.id).status is RunStatus.CANCELLED


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["cancel"], "give the id of a run to cancel, or filters (--status, --workflow"),
        (["retry"], "give the id of a run to retry, or filters"),
        (["cancel", "01a2", "--workflow", "hello"], "give run ids or filters"),
        (["cancel", "01a2", "--yes"], "--yes only applies with filters"),
        (["cancel", "--status", "failed"], "'failed' is not one of 'pending', 'running'"),
        (["retry", "--status", "running"], "'running' is not one of 'failed', 'cancelled'"),
    ],
)
def test_retry_and_cancel_refuse_unclear_requests(
    cli: Invoke, app: App, args: list[str], problem: str
) -> None:
    run = app.start(sample_app.hello, {"name": "A"})
    result = cli(*args)
    assert result.exit_code == 2
    assert problem in result.stderr
    assert app.get_run(run.id).status is RunStatus.PENDING


def test_a_time_in_the_future_matches_no_run(cli: Invoke, app: App) -> None:
    app.start(sample_app.hello, {"name": "A"})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    result = cli("cancel", "--since", later, "--yes")
    assert result.stdout.startswith("No pending or running runs created since ")


# -- versions ---------------------------------------------------------------------------------------


def test_runs_by_version_and_the_version_of_a_run(cli: Invoke, app: App) -> None:
    old = Workflow("versioned", version="1")
    old.step(name="only")(lambda input: input)
    new = Workflow("versioned", version="2")
    new.step(name="renamed")(lambda input: input)
    app.register(old, new)
    first = app.start("versioned", 1, version="1")
    second = app.start("versioned", 2)
    listed = cli("runs", "--workflow", "versioned", "--version", "1", "--json")
    assert listed.exit_code == 0, listed.output
    assert [r["id"] for r in json.loads(listed.stdout)] == [first.id]
    assert [r["id"] for r in json.loads(cli("runs", "--version", "2", "--json").stdout)] == [
        second.id
    ]
    shown = cli("run", first.id)
    assert ["Version", "1"] in [line.split() for line in shown.stdout.splitlines()]
    # no worker runs version 1: the run says it waits for one
    assert "for a worker of version 1: no live worker has it" in shown.stdout
    table = cli("runs", "--workflow", "versioned").stdout
    assert "pending (no worker of version 1)" in table
    assert "pending (no worker of version 2)" in table
    shown_json = json.loads(cli("run", first.id, "--json").stdout)
    assert (shown_json["version"], shown_json["waiting_for_version"]) == ("1", True)
