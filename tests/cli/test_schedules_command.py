"""`pypgflow schedules`, the leader in `pypgflow instances`, and the worker's leadership and
retention options."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from pypgflow.app import App
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.leader import Leader
from pypgflow.retention import Retention
from pypgflow.worker import Worker
from tests.cli import schedule_app
from tests.cli.conftest import Invoke, eventually
from tests.cli.test_errors import one_error
from tests.conftest import running_worker

APP = "tests.cli.schedule_app:create_app"


@pytest.fixture
def scheduled(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> App:
    """The schedule app on this test's database, its schedules stored as a worker's start
    stores them."""
    monkeypatch.setenv(DATABASE_URL_ENV, pg_url)
    app = schedule_app.create_app()
    Leader(app).sync()
    return app


def test_schedules_lists_what_workers_stored(cli: Invoke, pg_url: str) -> None:
    assert cli("schedules").stdout == (
        "No schedules stored (workers store their app's schedules when they start).\n"
    )
    assert json.loads(cli("schedules", "--json").stdout) == []


def test_schedules_table_and_json(cli: Invoke, scheduled: App) -> None:
    result = cli("schedules")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "SCHEDULE", "CRON", "TIMEZONE", "WORKFLOW", "QUEUE", "LAST", "TICK", "NEXT", "TICK",
    ]  # fmt: skip
    assert lines[1].startswith("cleanup ")
    assert lines[1].split()[:10] == [
        "cleanup", "*/15", "*", "*", "*", "*", "UTC", "cleanup", "maintenance", "-",
    ]  # fmt: skip
    assert lines[1].endswith("s)")  # the next tick, and how soon: "(in 5m03s)"
    assert "(in " in lines[1]
    assert lines[2].split()[:9] == [
        "nightly-report", "0", "3", "*", "*", "*", "Europe/Paris", "report", "default",
    ]  # fmt: skip
    assert len(lines) == 3

    data = json.loads(cli("schedules", "--json").stdout)
    assert [(s["name"], s["cron"], s["timezone"], s["workflow"], s["queue"]) for s in data] == [
        ("cleanup", "*/15 * * * *", "UTC", "cleanup", "maintenance"),
        ("nightly-report", "0 3 * * *", "Europe/Paris", "report", "default"),
    ]
    assert data[1]["input"] == {"format": "pdf"}
    assert data[1]["priority"] == 0
    assert data[1]["last_tick_at"] is None
    assert data[1]["next_tick_at"].endswith("+00:00")


def test_schedules_takes_the_database_from_the_app(cli: Invoke, scheduled: App) -> None:
    result = cli("schedules", "--app", APP, "--json", env={DATABASE_URL_ENV: scheduled.url})
    assert result.exit_code == 0, result.output
    assert [s["name"] for s in json.loads(result.stdout)] == ["cleanup", "nightly-report"]


def test_schedules_shows_the_last_tick_and_an_overdue_next_one(cli: Invoke, scheduled: App) -> None:
    from pypgflow.engines.base import ScheduleTicks

    state = scheduled.engine.schedule_states()["cleanup"]
    last = state.defined_at - timedelta(minutes=20)
    scheduled.engine.record_schedule_ticks(
        [ScheduleTicks("cleanup", last, last + timedelta(minutes=15))]
    )
    line = cli("schedules").stdout.splitlines()[1]
    assert "overdue 5m" in line  # no leader has started it: the next tick is late
    assert line.count("-") >= 4  # the last tick's date is shown, not "-"
    assert json.loads(cli("schedules", "--json").stdout)[0]["last_tick_at"] == last.isoformat()


def test_schedules_errors(cli: Invoke, empty_pg_url: str) -> None:
    error = one_error(cli("--database-url", empty_pg_url, "schedules"))
    assert "the pypgflow schema 'pypgflow' is missing" in error
    error = one_error(cli("--database-url", "postgresql://postgres@127.0.0.1:1/x", "schedules"))
    assert error.startswith("Error: cannot connect to PostgreSQL at postgres@127.0.0.1:1/x")
    error = one_error(cli("schedules", "--app", "tests.cli.nowhere:app"))
    assert "cannot import module 'tests.cli.nowhere'" in error


def test_schedules_help(cli: Invoke) -> None:
    result = cli("schedules", "--help")
    assert result.exit_code == 0
    assert "pypgflow schedules" in result.stdout
    assert "  schedules " in cli("--help").stdout


def test_instances_shows_the_leader(cli: Invoke, scheduled: App) -> None:
    with running_worker(scheduled, lease_ttl=2.0) as worker:
        eventually(lambda: worker.is_leader)
        lines = cli("instances").stdout.splitlines()
        data = json.loads(cli("instances", "--json").stdout)
    assert lines[-1] == f"Leader: {worker.instance_id}"
    assert lines[-2] == ""
    assert [(i["instance_id"], i["leader"]) for i in data] == [(worker.instance_id, True)]
    scheduled.engine.register_instance("idle", hostname="h", pid=1, queues={"default": 1})
    assert cli("instances").stdout.splitlines()[-1] == (
        "Leader: none (no instance holds the leader lease)"
    )


def test_worker_passes_leadership_and_retention_options(
    cli: Invoke, scheduled: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, object] = {}

    def fake_run(self: Worker) -> None:
        seen.update(lease_ttl=self.leader.lease_ttl, retention=self.leader.retention)

    monkeypatch.setattr(Worker, "run", fake_run)
    result = cli("worker", APP)
    assert result.exit_code == 0, result.output
    assert seen == {"lease_ttl": 15.0, "retention": Retention()}
    result = cli(
        "worker", APP, "--lease-ttl", "4.5", "--keep-completed", "1", "--keep-failed", "0.5"
    )
    assert result.exit_code == 0, result.output
    assert seen == {
        "lease_ttl": 4.5,
        "retention": Retention(completed=timedelta(days=1), failed=timedelta(hours=12)),
    }
    assert cli("worker", APP, "--lease-ttl", "0").exit_code == 2
    assert cli("worker", APP, "--keep-failed", "-1").exit_code == 2
