"""``pypgflow start``: start a run of the user's app, its input read from ``--input``, now or
later (``--delay``, ``--run-at``); with ``--wait``, show its progress and print its result."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from datetime import datetime
from typing import Any

import click

from pypgflow import defaults
from pypgflow.app import Run
from pypgflow.cli.filters import Moment
from pypgflow.cli.loading import user_app
from pypgflow.cli.output import echo_json, one_line
from pypgflow.errors import ResultTimeout, RunCancelled, WorkflowFailed
from pypgflow.progress import Progress

#: the longest pause between two looks at a run that --wait follows (a finish wakes it sooner)
FOLLOW_INTERVAL = 0.25


def read_input(value: str | None) -> Any:
    """The run input from ``--input``: JSON text, ``@file.json``, or ``-`` for stdin."""
    if value is None:
        return None
    if value == "-":
        source, text = "standard input", sys.stdin.read()
    elif value.startswith("@"):
        path = value[1:]
        source = f"file {path!r}"
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path!r}: {exc.strerror or exc}", param_hint="'--input'"
            ) from None
        except UnicodeDecodeError as exc:
            raise click.BadParameter(
                f"{source} is not UTF-8 text: {exc.reason}", param_hint="'--input'"
            ) from None
    else:
        source, text = "the input", value
    if not text.strip():
        raise click.BadParameter(
            f"{source} is empty: give JSON, such as {{}} or null", param_hint="'--input'"
        )
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            param_hint="'--input'",
        ) from None
    except ValueError as exc:
        raise click.BadParameter(
            f"{source} is not valid JSON: {exc}", param_hint="'--input'"
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (use null or a number)")


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.argument("workflow")
@click.option(
    "-i",
    "--input",
    "input_value",
    metavar="JSON|@FILE|-",
    help="The run input: JSON text, @file.json, or - to read it from stdin [default: null].",
)
@click.option(
    "--queue",
    default=None,
    metavar="NAME",
    help="The queue to run it on [default: the workflow's queue, as registered, else "
    f"{defaults.DEFAULT_QUEUE!r}].",
)
@click.option(
    "--priority",
    type=click.IntRange(0, 9),
    default=defaults.DEFAULT_PRIORITY,
    show_default=True,
    metavar="0-9",
    help="0 (first) to 9 (last).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Start no sooner than this many seconds from now.",
)
@click.option(
    "--run-at",
    type=Moment(ago=False),
    metavar="TIME",
    help="Start no sooner than this time: ISO 8601 with a UTC offset, e.g. "
    "2025-06-01T09:30:00+02:00 or 2025-06-01T07:30:00Z.",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Start at most one run per key: repeating it returns the first run's id.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the run to finish, showing its steps as they move (on stderr), and print its "
    "result.",
)
@click.option(
    "--quiet", "-Q", is_flag=True, help="With --wait: print the result only, not the progress."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up waiting (exit 1) after this long [default: wait forever].",
)
@click.pass_context
def start(
    ctx: click.Context,
    app_spec: str,
    workflow: str,
    input_value: str | None,
    queue: str | None,
    priority: int,
    delay: float | None,
    run_at: datetime | None,
    idempotency_key: str | None,
    wait: bool,
    quiet: bool,
    timeout: float | None,
) -> None:
    """Start a run of WORKFLOW, registered with the app MODULE:APP.

    Prints the run id. With --wait, shows each step as it starts, fails or
    completes (on stderr), then prints the run's result as JSON once it
    completes, or the error and exit code 1 if it failed or was cancelled.
    A worker must be running for the run to make progress.

    \b
    Examples:
      pypgflow start myproject.flows:app hello --input '{"name": "World"}'
      pypgflow start myproject.flows:app report --input @params.json --wait --timeout 300
      pypgflow start myproject.flows:app report --run-at 2025-06-01T09:30:00+02:00
      echo '[1, 2, 3]' | pypgflow start myproject.flows:app total --input - --wait
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    if quiet and not wait:
        raise click.UsageError("--quiet only applies with --wait")
    if delay is not None and run_at is not None:
        raise click.UsageError("give --delay or --run-at, not both")
    run_input = read_input(input_value)
    app = user_app(ctx, app_spec)
    run = app.start(
        workflow,
        run_input,
        queue=queue,
        priority=priority,
        delay=delay,
        run_at=run_at,
        idempotency_key=idempotency_key,
    )
    if not wait:
        click.echo(run.id)
        return
    click.echo(f"Started run {run.id} of {workflow}; waiting for it to finish...", err=True)
    try:
        if not quiet:
            follow(run, workflow, timeout)
        result = run.result(timeout=0 if not quiet else timeout)
    except KeyboardInterrupt:
        click.echo(f"Stopped waiting; run {run.id} goes on (see: pypgflow run {run.id}).", err=True)
        ctx.exit(130)
    except WorkflowFailed as exc:
        raise click.ClickException(
            f"{one_line(exc.message)} (details: pypgflow run {run.id})"
        ) from exc
    except RunCancelled as exc:
        raise click.ClickException(one_line(exc.message)) from exc
    echo_json(result)


def follow(run: Run, label: str, timeout: float | None) -> None:
    """Show the run's steps as they move (the demo's display, on stderr) until it finishes;
    ResultTimeout after ``timeout`` seconds. Between two looks it waits on the run's result, so
    that its end is shown as soon as it is announced."""
    started = time.perf_counter()
    progress = Progress(run.app, sys.stderr, {run.id: label}, started)
    progress.header()
    deadline = None if timeout is None else time.monotonic() + timeout
    while not progress.poll():
        pause = FOLLOW_INTERVAL
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ResultTimeout(f"run {run.id} did not finish within {timeout:g} s")
            pause = min(pause, left)
        with contextlib.suppress(ResultTimeout, WorkflowFailed, RunCancelled):
            run.result(timeout=pause)  # returns (or raises) at once when the run finishes
