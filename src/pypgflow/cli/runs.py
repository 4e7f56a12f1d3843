"""Reading stored runs, with only the database: ``runs`` (a page of them, by filters and
cursor) and ``run`` (one, by its id or a unique start of it)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import click

from pypgflow import defaults
from pypgflow.cli.filters import filter_options, run_filter
from pypgflow.cli.group import app_option, json_option
from pypgflow.cli.loading import database_app
from pypgflow.cli.output import (
    attempt_error,
    echo_json,
    elapsed,
    fields,
    run_fields,
    run_json,
    seconds,
    step_going,
    step_name,
    table,
    waiting_line,
    when,
)


@click.command("runs")
@app_option
@filter_options(status_help="Only runs in this state (repeatable: any of them).")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=defaults.MAX_LIST_LIMIT),
    default=defaults.DEFAULT_LIST_LIMIT,
    show_default=True,
    help="At most this many runs, newest first.",
)
@click.option(
    "--version",
    "version",
    metavar="VERSION",
    help="Only runs started on this version of their workflow (with --workflow, typically).",
)
@click.option(
    "--after",
    "cursor",
    metavar="CURSOR",
    help="The next page: the cursor printed after the previous one.",
)
@json_option
@click.pass_context
def list_runs(
    ctx: click.Context,
    app_spec: str | None,
    statuses: tuple[str, ...],
    workflow: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    version: str | None,
    cursor: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first, a page at a time.

    The table shows id, workflow, status, created and duration (so far, for
    a running run); --json shows everything. When more runs match, the
    cursor of the next page is printed to stderr: pass it as --after (with
    the same filters).

    \b
    Examples:
      pypgflow runs
      pypgflow runs --status failed --workflow hello --limit 10
      pypgflow runs --since 2h --status failed --status cancelled
      pypgflow runs --since 2025-06-01T00:00:00Z --until 2025-06-02T00:00:00Z --json
      pypgflow runs --limit 100 --after eyJhdCI6...
      pypgflow runs --workflow charge --version 1 --status running
    """
    where = dataclasses.replace(run_filter(statuses, workflow, since, until), version=version)
    app = database_app(ctx, app_spec)
    page = app.engine.find_runs(where, limit=limit, cursor=cursor)
    runs = app.with_waiting(page.runs)
    if as_json:
        echo_json([run_json(info, steps=False) for info in runs])
    elif not runs:
        click.echo("No runs found.")
    else:
        rows = [
            (
                info.id,
                info.workflow,
                info.status.value
                + (f" (no worker of version {info.version})" if info.waiting_for_version else ""),
                when(info.created_at),
                seconds(elapsed(info.started_at, info.finished_at, going=not info.status.finished)),
            )
            for info in runs
        ]
        click.echo(table(["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"], rows, right=[4]))
    if page.next_cursor is not None:
        click.echo(f"More runs: the next page is --after {page.next_cursor}", err=True)


@click.command("run")
@click.argument("run_id")
@app_option
@click.option("--traceback", is_flag=True, help="Show the traceback of each failed attempt.")
@json_option
@click.pass_context
def show_run(
    ctx: click.Context, run_id: str, app_spec: str | None, traceback: bool, as_json: bool
) -> None:
    """Show a run, its steps and their errors (RUN_ID: the id, or any unique
    start of it).

    First the run (workflow, status, times, input, output, error), then its
    steps (status, attempts, duration, instance), then every failed
    attempt's error (with --traceback, its traceback).

    \b
    Examples:
      pypgflow run 01a23878-1438-7454-b3c0-d880c8b94d4a
      pypgflow run 01a23878-1438 --traceback    # any unique start of the id
      pypgflow run 01a23878-1438 --json | jq .steps
    """
    app = database_app(ctx, app_spec)
    info = app.get_run(app.resolve_run_id(run_id))
    if as_json:
        echo_json(run_json(info, steps=True))
        return
    click.echo(fields(run_fields(info)))
    if not info.steps:
        return
    click.echo()
    rows = [
        (
            step_name(step),
            step.status.value,
            str(step.attempts),
            seconds(elapsed(step.started_at, step.finished_at, going=step_going(step))),
            step.instance_id or "-",
        )
        for step in info.steps
    ]
    click.echo(table(["STEP", "STATUS", "ATTEMPTS", "DURATION", "INSTANCE"], rows, right=[2, 3]))
    waiting = [(step.name, waiting_line(step)) for step in info.steps if step.waiting_for]
    if waiting:
        click.echo()
        click.echo("Waiting:")
        click.echo(fields([(f"  {name}", line) for name, line in waiting]))
    errors = [error for step in info.steps for error in step.errors]
    if errors:
        click.echo()
        click.echo("Failed attempts:")
        for error in errors:
            click.echo(attempt_error(error, traceback=traceback))
