"""The SQLite schema: fresh install, upgrades, concurrent migrations, and clear errors when the
database is missing, unreadable or not migrated."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.sqlfile import migration_files
from pypgflow.engines.sqlite import SqliteEngine
from pypgflow.errors import DatabaseError, DatabaseUnavailable, SchemaNotMigrated
from tests.sqlite.conftest import REPO

ALL_VERSIONS = [v for v, _, _ in migration_files("pypgflow.engines.sqlite.migrations")]

pytestmark = pytest.mark.timeout(60)

one = Workflow("one")


@one.step
def only(input: int) -> int:
    return input


def catalog(path: Path) -> list[tuple[str, ...]]:
    """Every table and index with its definition (comments and spacing ignored) and columns."""
    with sqlite3.connect(path) as conn:
        objects = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        described: list[tuple[str, ...]] = []
        for kind, name, table, text in objects:
            normal = " ".join(re.sub(r"--[^\n]*", "", text or "").split())
            # ALTER TABLE ... ADD COLUMN writes " , col ...)" where a CREATE has ", col ... )"
            normal = re.sub(r"\s+([,)])", r"\1", normal)
            described.append((kind, name, table, normal))
            if kind == "table":
                for pragma in ("table_xinfo", "index_list", "foreign_key_list"):
                    rows = conn.execute(f"SELECT * FROM pragma_{pragma}(?)", (name,)).fetchall()
                    described.extend((pragma, name, *map(str, row)) for row in rows)
    conn.close()
    return described


def test_migrate_installs_every_version_and_is_idempotent(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "flows.db")
    assert engine.migrate() == ALL_VERSIONS
    assert engine.migrate() == []
    engine.check_schema()
    engine.close()
    again = SqliteEngine(f"sqlite:///{tmp_path}/flows.db")
    assert again.migrate() == []
    again.close()
    with sqlite3.connect(tmp_path / "flows.db") as conn:
        versions = conn.execute("SELECT version, name FROM migrations ORDER BY version").fetchall()
        assert versions == [
            (v, n) for v, n, _ in migration_files("pypgflow.engines.sqlite.migrations")
        ]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_step_by_step_migrations_equal_the_fresh_schema(tmp_path: Path) -> None:
    fresh, stepped = tmp_path / "fresh.db", tmp_path / "stepped.db"
    SqliteEngine(fresh).migrate()
    engine = SqliteEngine(stepped)
    engine.migrate_step_by_step()
    engine.check_schema()
    engine.close()
    assert catalog(fresh) == catalog(stepped)
    tables = {row[1] for row in catalog(fresh) if row[0] == "table"}
    assert {"migrations", "runs", "tasks", "instances"} <= tables


def test_constraints_keep_their_postgresql_names(tmp_path: Path) -> None:
    SqliteEngine(tmp_path / "flows.db").migrate()
    with sqlite3.connect(tmp_path / "flows.db") as conn:
        with pytest.raises(sqlite3.IntegrityError, match="runs_status_is_known"):
            conn.execute(
                "INSERT INTO runs (id, workflow, status, queue, remaining_steps, steps) "
                "VALUES ('x', 'w', 'sleeping', 'q', 1, '{}')"
            )
        with pytest.raises(sqlite3.IntegrityError, match="runs_priority_is_0_to_9"):
            conn.execute(
                "INSERT INTO runs (id, workflow, queue, priority, remaining_steps, steps) "
                "VALUES ('x', 'w', 'q', 10, 1, '{}')"
            )
        with pytest.raises(sqlite3.IntegrityError, match="cannot store TEXT value in INTEGER"):
            conn.execute(  # STRICT tables: types are enforced, as in PostgreSQL
                "INSERT INTO runs (id, workflow, queue, remaining_steps, steps) "
                "VALUES ('x', 'w', 'q', 'a', '{}')"
            )
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE status = 'queued' AND queue = 'q' "
                "ORDER BY priority, run_at, id LIMIT 5"
            )
        )
        assert "tasks_claim" in plan
        assert "TEMP B-TREE" not in plan
    conn.close()


def test_concurrent_migrations_apply_once(tmp_path: Path) -> None:
    """Four engines (separate connections, as in separate processes) migrate one new file."""
    path = tmp_path / "flows.db"
    barrier = threading.Barrier(4)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        engine = SqliteEngine(path)
        try:
            barrier.wait()
            results.append(engine.migrate())
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(results) == [[], [], [], ALL_VERSIONS]


def test_concurrent_migrations_in_separate_processes(tmp_path: Path) -> None:
    path = tmp_path / "flows.db"
    code = (
        "import sys\n"
        "from pypgflow.engines.sqlite import SqliteEngine\n"
        "print(SqliteEngine(sys.argv[1]).migrate())\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            outputs.append(out.strip())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert sorted(outputs) == [str(ALL_VERSIONS), "[]", "[]"]


def test_an_unmigrated_file_raises_schema_not_migrated(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "new.db")
    with pytest.raises(SchemaNotMigrated, match=r"run `pypgflow migrate` \(or app.migrate\(\)\)"):
        engine.check_schema()
    app = App(engine=engine, workflows=[one])
    with pytest.raises(SchemaNotMigrated, match=re.escape(str(tmp_path / "new.db"))) as info:
        app.start(one, 1)
    assert isinstance(info.value, DatabaseError)
    with pytest.raises(SchemaNotMigrated):
        app.list_runs()
    app.migrate()
    assert app.start(one, 1).status().value == "pending"
    app.close()


def test_tables_dropped_behind_the_engines_back(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "flows.db")
    engine.migrate()
    with sqlite3.connect(tmp_path / "flows.db") as conn:
        conn.execute("DROP TABLE instances")
    conn.close()
    with pytest.raises(SchemaNotMigrated, match="pypgflow migrate"):
        engine.list_instances(stale_after=30)
    engine.close()


def test_schema_versions_other_than_this_pypgflows(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "flows.db")
    engine.migrate()
    installed = engine.latest_version
    engine.latest_version = installed + 1  # as if this pypgflow had one more migration
    with pytest.raises(
        SchemaNotMigrated, match=f"at version {installed}, this pypgflow needs {installed + 1}"
    ):
        engine.check_schema()
    engine.latest_version = installed
    with sqlite3.connect(tmp_path / "flows.db") as conn:
        conn.execute(
            "INSERT INTO migrations (version, name) VALUES (?, 'future')", (installed + 1,)
        )
    conn.close()
    with pytest.raises(SchemaNotMigrated, match="newer than this pypgflow knows"):
        engine.check_schema()
    engine.close()


def test_a_database_that_cannot_be_opened_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "flows.db"
    engine = SqliteEngine(missing)
    with pytest.raises(DatabaseUnavailable, match=re.escape(str(missing))):
        engine.migrate()
    engine.close()

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all, but it is long enough" * 100)
    engine = SqliteEngine(garbage)
    with pytest.raises(DatabaseUnavailable, match=re.escape(str(garbage))):
        engine.check_schema()
    engine.close()
