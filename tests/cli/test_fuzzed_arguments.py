"""The command line fuzzed with Hypothesis: any arguments to the commands that return (not the
worker, the demo, the dashboard, nor ``start --wait``) end with exit code 0, a usage error (2,
click's message) or one ``Error: ...`` line (1), never a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.conftest import SAMPLE, Invoke
from tests.cli.test_errors import one_error

COMMANDS = ["migrate", "start", "runs", "run", "retry", "cancel", "instances", "schedules"]
TOKENS = [
    SAMPLE,
    "tests.cli.sample_app",
    "nowhere:app",
    "tests.cli.sample_app:missing",
    "hello",
    "broken",
    "--input",
    "-i",
    '{"name": "W"}',
    "{",
    "@/nonexistent.json",
    "--priority",
    "10",
    "-1",
    "--delay",
    "nan",
    "--run-at",
    "2026-13-01",
    "--idempotency-key",
    "--status",
    "failed",
    "bogus",
    "--workflow",
    "--since",
    "--until",
    "1h",
    "yesterday",
    "--limit",
    "0",
    "--after",
    "--json",
    "--traceback",
    "-y",
    "--yes",
    "--app",
    "--version",
    "0190",
    "ffffffff-ffff-7fff-bfff-ffffffffffff",
    "",
    "-",
    "--",
    "é",
]
arguments = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=8)), max_size=6)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
@given(command=st.sampled_from(COMMANDS), args=arguments)
def test_any_arguments_end_in_a_result_or_one_clear_error(
    cli: Invoke, command: str, args: list[str]
) -> None:
    if command == "start":
        args = [a for a in args if a != "--wait"]  # waiting needs a worker
    result = cli(command, *args, input="n\n")  # a confirmation asked for is declined
    assert "Traceback" not in result.output
    if result.exit_code == 1 and "Aborted" in result.stderr:
        assert "Error:" not in result.stdout  # the confirmation, declined
        return
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 1:
        one_error(result, code=1)
    elif result.exit_code == 2:
        assert "Error: " in result.stderr, result.stderr
