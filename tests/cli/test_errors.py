"""What goes wrong: one `Error: ...` line on stderr and exit code 1 (2 for usage errors)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import Result

from pypgflow.app import App
from pypgflow.cli import main
from pypgflow.defaults import DATABASE_URL_ENV
from tests.cli.conftest import SAMPLE, Invoke


def one_error(result: Result, code: int = 1) -> str:
    """The error line of a failed command, checking it is the whole story."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), result.stderr
    if code == 1:
        assert len(lines) == 1, result.stderr
        assert result.stdout == ""
    return lines[-1]


COMMANDS = ["migrate", "worker", "start", "runs", "run", "retry", "cancel", "instances"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_says_what_each_command_does_with_an_example(cli: Invoke, command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"pypgflow {command}" in result.stdout
    assert f"  {command} " in cli("--help").stdout  # listed, with its summary


def test_main_help_has_examples(cli: Invoke) -> None:
    out = cli("--help").stdout
    assert "Examples:" in out
    assert "--database-url" in out
    assert "PYPGFLOW_DATABASE_URL" in out


def test_no_database_url_means_the_embedded_default(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = one_error(cli("runs", env={DATABASE_URL_ENV: None}))
    assert error == (
        f"Error: there is no SQLite database at {tmp_path / 'pypgflow.db'}: run `pypgflow migrate` "
        "(or app.migrate()) to create it"
    )
    assert not (tmp_path / "pypgflow.db").exists()  # reading does not create it
    assert cli("migrate", env={DATABASE_URL_ENV: None}).exit_code == 0
    assert cli("runs", env={DATABASE_URL_ENV: None}).stdout == "No runs found.\n"


def test_bad_database_url(cli: Invoke) -> None:
    error = one_error(cli("--database-url", "mysql://db/app", "runs"))
    assert error == (
        "Error: unsupported database URL scheme 'mysql': use postgresql://user@host:port/dbname "
        "or sqlite:///path/to/flows.db"
    )
    error = one_error(cli("--database-url", "postgresql://host:5432/db?bogus=1", "runs"))
    assert "invalid PostgreSQL connection string" in error


@pytest.mark.parametrize(
    "command", [["migrate"], ["runs"], ["instances"], ["run", str(uuid.uuid4())]]
)
def test_unreachable_database(cli: Invoke, command: list[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres"
    error = one_error(cli("--database-url", url, *command))
    assert error.startswith("Error: cannot connect to PostgreSQL at postgres@127.0.0.1:1/postgres")


@pytest.mark.parametrize(
    "command", [["runs"], ["instances"], ["run", str(uuid.uuid4())], ["cancel", str(uuid.uuid4())]]
)
def test_unmigrated_database(cli: Invoke, empty_pg_url: str, command: list[str]) -> None:
    error = one_error(cli("--database-url", empty_pg_url, *command))
    assert "the pypgflow schema 'pypgflow' is missing" in error
    assert "run `pypgflow migrate`" in error


def test_unmigrated_database_stops_start_and_worker(cli: Invoke, empty_pg_url: str) -> None:
    env: dict[str, str | None] = {DATABASE_URL_ENV: empty_pg_url}
    for args in (["start", SAMPLE, "hello"], ["worker", SAMPLE]):
        error = one_error(cli(*args, env=env))
        assert "run `pypgflow migrate`" in error


ID = str(uuid.uuid4())


@pytest.mark.parametrize("command", ["run", "retry", "cancel"])
@pytest.mark.parametrize(
    ("run_id", "problem"),
    [
        (ID, f"no run with id {ID}"),
        ("0" * 8, "no run id starts with '00000000'"),
        ("not-a-uuid", "'not-a-uuid' is not a run id nor the start of one (1 to 32 hex digits"),
    ],
)
def test_unknown_run_id(cli: Invoke, command: str, run_id: str, problem: str) -> None:
    error = one_error(cli(command, run_id))
    assert error.startswith(f"Error: {problem}")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('{"name": ', "the input is not valid JSON: Expecting value at line 1, column 10"),
        ("{'name': 'x'}", "the input is not valid JSON: Expecting property name enclosed in"),
        ("[1, NaN]", "the input is not valid JSON: NaN is not a JSON value"),
        ("  ", "the input is empty: give JSON, such as {} or null"),
        ("@/no/such/file.json", "cannot read '/no/such/file.json': No such file or directory"),
    ],
)
def test_bad_input(cli: Invoke, value: str, problem: str) -> None:
    error = one_error(cli("start", SAMPLE, "hello", "--input", value), code=2)
    assert error.startswith("Error: Invalid value for '--input': ")
    assert problem in error


def test_bad_input_from_a_file_or_stdin(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text("{oops}", encoding="utf-8")
    error = one_error(cli("start", SAMPLE, "hello", "--input", f"@{path}"), code=2)
    assert f"file {str(path)!r} is not valid JSON: Expecting property name" in error
    error = one_error(cli("start", SAMPLE, "hello", "--input", "-", input=""), code=2)
    assert "standard input is empty" in error


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("tests.cli.no_such_module:app", "cannot import module 'tests.cli.no_such_module'"),
        ("nosuchpackage.flows:app", "cannot import module 'nosuchpackage.flows': no module named"),
        ("tests.cli.sample_app:nope", "module 'tests.cli.sample_app' has no attribute 'nope'"),
        (
            "tests.cli.sample_app:not_an_app",
            "is not a pypgflow App (nor a function returning one): got int",
        ),
        (
            "tests.cli.sample_app:make_nothing",
            "'tests.cli.sample_app:make_nothing' returned NoneType, not a pypgflow App",
        ),
        ("tests.cli.sample_app:hello", "got Workflow"),
        ("tests.cli.sample_app", "expected MODULE:APP"),
        ("tests.cli.sample_app:", "expected MODULE:APP"),
        ("tests/cli/sample_app.py:app", "is a path: give a module name"),
    ],
)
def test_unknown_app(cli: Invoke, spec: str, problem: str) -> None:
    for args in (["start", spec, "hello"], ["worker", spec], ["runs", "--app", spec]):
        error = one_error(cli(*args))
        assert problem in error


def test_unknown_workflow(cli: Invoke) -> None:
    error = one_error(cli("start", SAMPLE, "nope"))
    assert error == (
        "Error: no workflow named 'nope' is registered with this app "
        "(registered: broken, fragile, gated, hello, nap, refused) or stored in its database"
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["start", SAMPLE, "hello", "--priority", "10"], "'--priority'"),
        (["start", SAMPLE, "hello", "--delay", "-1"], "'--delay'"),
        (["start", SAMPLE, "hello", "--timeout", "5"], "--timeout only applies with --wait"),
        (["start", SAMPLE, "hello", "--queue", ""], "queue must be a non-empty name"),
        (["worker", SAMPLE, "--queue", "default=0"], "SLOTS must be at least 1"),
        (["worker", SAMPLE, "--queue", "default=many"], "SLOTS must be a whole number"),
        (["worker", SAMPLE, "--queue", "=3"], "has no queue name"),
        (["worker", SAMPLE, "-q", "a", "-q", "a=2"], "queue 'a' is given twice"),
        (["worker", SAMPLE, "--poll-interval", "0"], "'--poll-interval'"),
        (["runs", "--limit", "0"], "'--limit'"),
    ],
)
def test_bad_options(cli: Invoke, args: list[str], problem: str) -> None:
    result = cli(*args)
    assert result.exit_code in (1, 2), result.output
    assert problem in result.stderr
    assert "Traceback" not in result.output


def test_errors_go_through_the_standalone_entry_point(pg_url: str) -> None:
    """Outside CliRunner too: main() exits with status 1 on a pypgflow error."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--database-url", "mysql://x", "runs"], prog_name="pypgflow")
    assert exit_info.value.code == 1


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["start", SAMPLE, "hello", "--queue", "a\udcff"], "queue must be valid Unicode"),
        (["start", SAMPLE, "hello", "--queue", "a\x00"], "queue must not contain the NUL"),
        (["start", SAMPLE, "hello", "--idempotency-key", "k\udcff"], "idempotency_key must be"),
        (["start", SAMPLE, "hello", "--idempotency-key", "k\x00"], "idempotency_key must not"),
        (["start", SAMPLE, "hello", "--delay", "1e15"], "delay must be a number of seconds"),
        (["start", SAMPLE, "hello", "--delay", "inf"], "delay must be a number of seconds"),
        (["worker", SAMPLE, "--queue", "a\udcff"], "queue must be valid Unicode"),
        (["runs", "--limit", str(2**63)], "'--limit'"),
        (["runs", "--workflow", "a\x00"], "workflow must not contain the NUL"),
    ],
    ids=[
        "queue-surrogate", "queue-nul", "key-surrogate", "key-nul", "delay", "delay-inf",
        "worker-queue", "limit", "runs-workflow",
    ],
)  # fmt: skip
def test_arguments_no_database_takes_are_refused_clearly(
    cli: Invoke, app: App, args: list[str], problem: str
) -> None:
    """Shells can hand over undecodable bytes (as lone surrogates) and NUL-free text only, but
    an argument list from another program may hold anything: each is a usage error or a clear
    `Error:` line, never a database error, and nothing is written."""
    result = cli(*args)
    assert result.exit_code in (1, 2), result.output
    assert problem in result.stderr
    assert "Traceback" not in result.output
    assert "DatabaseError" not in result.output
    assert "PostgreSQL" not in result.stderr
    assert app.list_runs() == []
