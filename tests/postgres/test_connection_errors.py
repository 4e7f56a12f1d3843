"""Clear errors for what users get wrong first: a bad connection string, a database that is down
or missing, a schema that was never migrated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pypgflow import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    InvalidArgument,
    SchemaNotMigrated,
    Workflow,
)
from pypgflow.app import App
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.engines.sqlfile import migration_files
from tests.conftest import running_worker

ALL_VERSIONS = [v for v, _, _ in migration_files("pypgflow.engines.postgres.migrations")]

pytestmark = pytest.mark.timeout(30)

flow = Workflow("probe")
flow.step(name="echo")(lambda input: input)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "unsupported database URL scheme 'mysql'"),
        ("sqlite-ish", "unsupported database URL scheme"),
        ("postgresql://postgres@127.0.0.1:abc/x", "port 'abc' is not a port number"),
        ("postgresql://postgres@127.0.0.1:70000/x", "port '70000'"),
        ("postgresql://postgres@127.0.0.1/x?bogus_option=1", "invalid PostgreSQL connection"),
        ("host=127.0.0.1 port=5432 = broken", "invalid PostgreSQL connection string"),
    ],
)
def test_bad_connection_strings_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App(url)


def test_no_url_at_all_means_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with App() as app:
        assert app.url == "sqlite:///pypgflow.db"
        app.migrate()
    assert (tmp_path / "pypgflow.db").exists()
    with pytest.raises(ConfigurationError, match=DATABASE_URL_ENV):
        App("")


def test_app_reads_the_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, pg_url)
    with App(workflows=[flow]) as app:
        assert app.url == pg_url
        run = app.start(flow, "from env")
        with running_worker(app):
            assert run.result(timeout=5) == "from env"


def test_schema_name_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="schema"):
        App("postgresql://postgres@127.0.0.1:5432/x", schema="bad; DROP")


def test_schema_names_fit_their_channels(pg_url: str) -> None:
    """PostgreSQL cuts identifiers at 63 bytes, channel names too: a longer schema would
    migrate, then every start would fail ("channel name too long"). The longest allowed works
    end to end (its channels are its name and "_work"/"_done")."""
    for too_long in ("s" * 59, "é" * 30):  # bytes, not characters
        with pytest.raises(InvalidArgument, match="at most 58 bytes"):
            App(pg_url, schema=too_long)
    longest = App(pg_url, workflows=[flow], schema="s" * 58)
    longest.migrate()
    run = longest.start(flow, "fits")
    with running_worker(longest):
        assert run.result(timeout=5) == "fits"
    longest.close()


def test_a_server_that_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    app = App("postgresql://postgres@127.0.0.1:1/x", workflows=[flow])  # lazy: no error yet
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        app.start(flow, 1)
    message = str(caught.value)
    assert "cannot connect to PostgreSQL at postgres@127.0.0.1:1/x" in message
    assert "refused" in message.lower()
    assert time.monotonic() - started < 5
    with pytest.raises(DatabaseUnavailable):
        app.migrate()
    with pytest.raises(DatabaseUnavailable):
        app.get_run("00000000-0000-0000-0000-000000000000")
    with pytest.raises(DatabaseUnavailable):
        asyncio.run(app.start_async(flow, 1))
    with pytest.raises(DatabaseError):  # DatabaseUnavailable is a DatabaseError
        app.list_runs()
    with pytest.raises(DatabaseUnavailable), running_worker(app):
        pass
    app.close()


def test_a_password_is_never_shown() -> None:
    app = App("postgresql://postgres:s3cret@127.0.0.1:1/x")
    with pytest.raises(DatabaseUnavailable) as caught:
        app.list_runs()
    assert "s3cret" not in str(caught.value)
    app.close()


def test_a_database_that_does_not_exist() -> None:
    app = App("postgresql://postgres@127.0.0.1:5432/pypgflow_no_such_database", workflows=[flow])
    with pytest.raises(DatabaseUnavailable, match='database "pypgflow_no_such_database"'):
        app.start(flow, 1)
    app.close()


def test_an_unmigrated_database(empty_pg_url: str) -> None:
    app = App(empty_pg_url, workflows=[flow])
    expected = r"schema 'pypgflow' is missing in .*: run `pypgflow migrate` \(or app.migrate\(\)\)"
    with pytest.raises(SchemaNotMigrated, match=expected):
        app.start(flow, 1)
    with pytest.raises(SchemaNotMigrated, match=expected):
        app.list_runs()
    with pytest.raises(SchemaNotMigrated, match=expected):
        app.get_run("00000000-0000-0000-0000-000000000000")
    with pytest.raises(SchemaNotMigrated, match=expected), running_worker(app):
        pass
    assert app.migrate() == ALL_VERSIONS
    run = app.start(flow, "now it works")
    with running_worker(app):
        assert run.result(timeout=5) == "now it works"
    app.close()


def test_another_schema_name_is_separate(pg_url: str) -> None:
    other = App(pg_url, workflows=[flow], schema="tenant_b")
    with pytest.raises(SchemaNotMigrated, match="'tenant_b'"):
        other.start(flow, 1)
    assert other.migrate() == ALL_VERSIONS
    main = App(pg_url, workflows=[flow])
    run = other.start(flow, "b")
    assert main.list_runs() == []
    with running_worker(other):
        assert run.result(timeout=5) == "b"
    other.close()
    main.close()
