"""Migrations: versioned, ordered, idempotent; applying them one by one gives exactly the schema
a fresh install creates from schema.sql (same tables, columns, indexes and constraints)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pypgflow import SchemaNotMigrated, Workflow
from pypgflow.app import App
from pypgflow.engines.postgres.engine import PostgresEngine
from pypgflow.engines.sqlfile import migration_files
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

SCHEMA = "pypgflow"
MIGRATIONS = "pypgflow.engines.postgres.migrations"
ALL_VERSIONS = [v for v, _, _ in migration_files(MIGRATIONS)]


def catalog(url: str, schema: str = SCHEMA) -> dict[str, Any]:
    """Everything that makes a schema's shape, in comparable form."""
    params = {"schema": schema}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = %(schema)s ORDER BY 1",
            params,
        ).fetchall()
        columns = conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, udt_name, "
            "column_default, is_nullable, is_identity, identity_generation, "
            "character_maximum_length, numeric_precision "
            "FROM information_schema.columns WHERE table_schema = %(schema)s ORDER BY 1, 3",
            params,
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = %(schema)s ORDER BY 1, 2",
            params,
        ).fetchall()
        constraints = conn.execute(
            "SELECT cl.relname, co.conname, co.contype, pg_get_constraintdef(co.oid, true), "
            "co.condeferrable, co.condeferred "
            "FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid "
            "JOIN pg_namespace n ON n.oid = co.connamespace "
            "WHERE n.nspname = %(schema)s ORDER BY 1, 2",
            params,
        ).fetchall()
        sequences = conn.execute(
            "SELECT sequence_name, data_type, start_value, increment "
            "FROM information_schema.sequences WHERE sequence_schema = %(schema)s ORDER BY 1",
            params,
        ).fetchall()
        other = conn.execute(
            "SELECT c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %(schema)s ORDER BY 1",
            params,
        ).fetchall()
        functions = conn.execute(
            "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(schema)s "
            "ORDER BY 1, 2",
            params,
        ).fetchall()
        triggers = conn.execute(
            "SELECT event_object_table, trigger_name, action_timing, event_manipulation, "
            "action_statement FROM information_schema.triggers "
            "WHERE trigger_schema = %(schema)s ORDER BY 1, 2, 4",
            params,
        ).fetchall()
        versions = conn.execute(
            f'SELECT version, name FROM "{schema}".migrations ORDER BY version'
        ).fetchall()
    return {
        "tables": tables,
        "columns": columns,
        "indexes": indexes,
        "constraints": constraints,
        "sequences": sequences,
        "relations": other,
        "functions": functions,
        "triggers": triggers,
        "versions": versions,
    }


def test_step_by_step_migrations_equal_a_fresh_install(
    empty_pg_url: str, another_empty_pg_url: str
) -> None:
    fresh = PostgresEngine(empty_pg_url)
    stepwise = PostgresEngine(another_empty_pg_url)
    try:
        assert fresh.migrate() == [v for v, _, _ in migration_files(MIGRATIONS)]
        stepwise.migrate_step_by_step()
    finally:
        fresh.close()
        stepwise.close()
    installed, migrated = catalog(empty_pg_url), catalog(another_empty_pg_url)
    assert installed["tables"], "nothing was installed"
    assert {t for t, _ in installed["tables"]} >= {
        "migrations",
        "runs",
        "tasks",
        "instances",
    }
    for part in installed:
        assert installed[part] == migrated[part], part

    # The comparison notices a difference as small as one default.
    with psycopg.connect(another_empty_pg_url) as conn:
        conn.execute(f"ALTER TABLE {SCHEMA}.runs ALTER COLUMN priority SET DEFAULT 5")
    assert catalog(another_empty_pg_url)["columns"] != installed["columns"]


def test_both_ways_give_a_working_schema(empty_pg_url: str, another_empty_pg_url: str) -> None:
    flow = Workflow("both")
    flow.step(name="echo")(lambda input: input)
    stepwise = PostgresEngine(another_empty_pg_url)
    stepwise.migrate_step_by_step()
    stepwise.close()
    for url in (empty_pg_url, another_empty_pg_url):
        with App(url, workflows=[flow]) as app:
            app.migrate()
            run = app.start(flow, url)
            with running_worker(app):
                assert run.result(timeout=5) == url


def test_migrate_is_idempotent(empty_pg_url: str) -> None:
    with App(empty_pg_url) as app:
        assert app.migrate() == ALL_VERSIONS
        before = catalog(empty_pg_url)
        assert app.migrate() == []
        assert app.migrate() == []
    with App(empty_pg_url) as other:  # a new process, same database
        assert other.migrate() == []
    assert catalog(empty_pg_url) == before
    engine = PostgresEngine(empty_pg_url)
    engine.migrate_step_by_step()  # nothing left to apply either
    engine.close()
    assert catalog(empty_pg_url) == before


def test_concurrent_migrations_apply_once(empty_pg_url: str) -> None:
    apps = [App(empty_pg_url) for _ in range(4)]
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(apps))

    def migrate(app: App) -> None:
        try:
            barrier.wait(5)
            results.append(app.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    for app in apps:
        app.close()
    assert errors == []
    assert sorted(results) == [[], [], [], ALL_VERSIONS]
    assert catalog(empty_pg_url)["versions"] == [(v, n) for v, n, _ in migration_files(MIGRATIONS)]


def test_migrate_async(empty_pg_url: str) -> None:
    import asyncio

    with App(empty_pg_url) as app:
        assert asyncio.run(app.migrate_async()) == ALL_VERSIONS
        assert asyncio.run(app.migrate_async()) == []


def test_migrations_are_numbered_in_order() -> None:
    found = migration_files(MIGRATIONS)
    assert [v for v, _, _ in found] == list(range(1, len(found) + 1))
    assert found[0][1] == "initial"


def test_a_schema_newer_than_this_pypgflow_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(f"INSERT INTO {SCHEMA}.migrations (version, name) VALUES (99, 'future')")
    with (
        App(pg_url) as app,
        pytest.raises(SchemaNotMigrated, match="version 99, newer than this pypgflow"),
    ):
        app.list_runs()


def test_an_outdated_schema_is_refused(pg_url: str) -> None:
    engine = PostgresEngine(pg_url)
    installed = engine.latest_version
    engine.latest_version += 1  # as if this pypgflow shipped a migration not yet applied
    try:
        with pytest.raises(
            SchemaNotMigrated,
            match=rf"version {installed}, this pypgflow needs {installed + 1}: run",
        ):
            engine.check_schema()
    finally:
        engine.close()
