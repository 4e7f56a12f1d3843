"""docs/security.md's worker role: granted exactly the block the page shows, it runs a worker
that completes runs (with the leader's work: a cron schedule, a retention pass), and it cannot
change the schema. Roles are cluster-wide: this one has a name of its own and is dropped at the
end."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pypgflow import DatabaseError, Workflow
from pypgflow.app import App
from pypgflow.insight import RunFilter
from pypgflow.retention import Retention
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
MARKER = "(the worker role's grants: tests/postgres/test_least_privilege.py"


def documented_grants() -> str:
    """The SQL block right after the page's marker."""
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(MARKER) :]
    block = re.search(r"```sql\n(.*?)```", after, re.DOTALL)
    assert block is not None
    return block.group(1)


def with_user(url: str, user: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(url)
    params["user"] = user
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture
def worker_url(pg_url: str) -> Iterator[str]:
    """The URL of a login role granted what docs/security.md says, in this test's database."""
    role = f"pypgflow_worker_{uuid.uuid4().hex[:10]}"
    database = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    grants = documented_grants()
    assert "pypgflow_worker" in grants
    assert "DATABASE app " in grants
    grants = grants.replace("DATABASE app ", f'DATABASE "{database}" ')
    grants = re.sub(r"\bpypgflow_worker\b", role, grants)
    with psycopg.connect(pg_url, autocommit=True) as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        try:
            owner.execute(grants.encode())  # the page's block, as it is (names substituted)
            yield with_user(pg_url, role)
        finally:
            owner.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            owner.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def flows() -> list[Workflow]:
    work = Workflow("work")

    @work.step
    def double(input: int) -> int:
        return input * 2

    # fleet-wide limits: admissions write holders and rate tokens (see pypgflow.limits)
    @work.step(concurrency=2, rate_limit="api")
    def add(double: int) -> int:
        return double + 1

    tick = Workflow("tick")
    tick.step(name="noted")(lambda input: "ticked")
    return [work, tick]


def test_a_worker_under_the_documented_grants_completes_runs(pg_url: str, worker_url: str) -> None:
    with App(pg_url, workflows=flows()) as owner_app:
        owner_app.migrate()  # the owner's part: current already, and the blueprints stored
    app = App(worker_url, workflows=flows())
    app.rate_limit("api", 1000, per=1)
    try:
        app.schedule("every-second", "* * * * * */1", "tick")
        single = app.start("work", 1)
        many = app.start_many("work", list(range(100)))  # 64 or more: streamed by COPY
        keyed = app.start("work", 5, idempotency_key="k-5")
        assert app.start("work", 5, idempotency_key="k-5").id == keyed.id
        started_async = asyncio.run(app.start_async("work", 2))
        with running_worker(app, lease_ttl=2.0) as worker:
            assert single.result(timeout=20) == 3
            assert [run.result(timeout=20) for run in many] == [n * 2 + 1 for n in range(100)]
            assert keyed.result(timeout=20) == 11
            assert started_async.result(timeout=20) == 5  # else the worker may stop before it
            deadline = time.monotonic() + 20
            while not app.list_runs(workflow="tick") and time.monotonic() < deadline:
                time.sleep(0.1)
            assert worker.is_leader
            assert [i.instance_id for i in app.instances()] == [worker.instance_id]
        assert app.list_runs(workflow="tick")  # the leader started the schedule's runs
        later = app.start("work", 3, delay=3600)
        assert app.cancel(later.id)  # an operator's cancel and retry
        assert later.status().value == "cancelled"
        assert app.retry(later.id)
        assert later.status().value == "pending"
        assert app.schedules()[0].name == "every-second"
        # the operators' reads (the dashboard's) work too
        assert len(app.engine.find_runs(RunFilter(), limit=5).runs) == 5
        depths = {depth.queue: depth for depth in app.engine.queue_depths()}
        assert depths["default"].due == 1  # the retried run: a retry is due at once
        assert app.engine.fleet_gauges(stale_after=30).instances == {"online": 0, "offline": 0}
    finally:
        app.close()


def test_pruning_under_the_documented_grants_deletes_finished_runs(
    pg_url: str, worker_url: str
) -> None:
    from pypgflow.leader import Leader

    app = App(worker_url, workflows=flows())
    app.rate_limit("api", 1000, per=1)
    try:
        run = app.start("work", 1)
        with running_worker(app, retention=None):
            assert run.result(timeout=20) == 3
        leader = Leader(app, retention=Retention(completed=timedelta(0)))
        pruned = asyncio.run(leader.prune(while_leader=False))
        assert pruned.runs == 1
        assert app.list_runs() == []
    finally:
        app.close()


REFUSED = [
    "DROP TABLE pypgflow.runs",
    "ALTER TABLE pypgflow.tasks ADD COLUMN extra int",
    "CREATE TABLE pypgflow.extra (id int)",
    "CREATE INDEX extra ON pypgflow.runs (queue)",
    "TRUNCATE pypgflow.runs",
    "INSERT INTO pypgflow.migrations (version, name) VALUES (999, 'mine')",
    "DELETE FROM pypgflow.migrations",
    "CREATE SCHEMA extra",
]


@pytest.mark.parametrize("statement", REFUSED)
def test_the_worker_role_cannot_change_the_schema(worker_url: str, statement: str) -> None:
    with psycopg.connect(worker_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement.encode())
        assert conn.execute(b"SELECT count(*) FROM pypgflow.migrations").fetchone() != (0,)


def test_the_worker_role_cannot_migrate(worker_url: str) -> None:
    elsewhere = App(worker_url, schema="tenant_b")
    try:
        with pytest.raises(DatabaseError, match="permission denied"):
            elsewhere.migrate()
    finally:
        elsewhere.close()
