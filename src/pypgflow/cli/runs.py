"""The commands over stored runs that need only the database: ``runs`` (list), ``run`` (show
one), ``retry`` and ``cancel``."""

from __future__ import annotations

import click

from pypgflow import defaults
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
    when,
)
from pypgflow.status import RunStatus


@click.command("runs")
@app_option
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs in this state.",
)
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=defaults.DEFAULT_LIST_LIMIT,
    show_default=True,
    help="At most this many runs, newest first.",
)
@json_option
@click.pass_context
def list_runs(
    ctx: click.Context,
    app_spec: str | None,
    status: str | None,
    workflow: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first.

    The table shows id, workflow, status, created and duration (so far, for
    a running run); --json shows everything.

    \b
    Examples:
      pypgflow runs
      pypgflow runs --status failed --workflow hello --limit 10
      pypgflow runs --status running --json
    """
    app = database_app(ctx, app_spec)
    runs = app.list_runs(status=status.lower() if status else None, workflow=workflow, limit=limit)
    if as_json:
        echo_json([run_json(info, steps=False) for info in runs])
        return
    if not runs:
        click.echo("No runs found.")
        return
    rows = [
        (
            info.id,
            info.workflow,
            info.status.value,
            when(info.created_at),
            seconds(elapsed(info.started_at, info.finished_at, going=not info.status.finished)),
        )
        for info in runs
    ]
    click.echo(table(["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"], rows, right=[4]))


@click.command("run")
@click.argument("run_id")
@app_option
@click.option("--traceback", is_flag=True, help="Show the traceback of each failed attempt.")
@json_option
@click.pass_context
def show_run(
    ctx: click.Context, run_id: str, app_spec: str | None, traceback: bool, as_json: bool
) -> None:
    """Show a run, its steps and their errors.

    First the run (workflow, status, times, input, output, error), then its
    steps (status, attempts, duration, instance), then every failed
    attempt's error (with --traceback, its traceback).

    \b
    Examples:
      pypgflow run 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e
      pypgflow run 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e --traceback
      pypgflow run 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e --json | jq .steps
    """
    app = database_app(ctx, app_spec)
    info = app.get_run(run_id)
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
    errors = [error for step in info.steps for error in step.errors]
    if errors:
        click.echo()
        click.echo("Failed attempts:")
        for error in errors:
            click.echo(attempt_error(error, traceback=traceback))


@click.command()
@click.argument("run_id")
@app_option
@click.pass_context
def retry(ctx: click.Context, run_id: str, app_spec: str | None) -> None:
    """Resume a failed or cancelled run from its unfinished steps.

    Completed steps are kept, not run again; each resumed step gets a fresh
    attempt budget. Exit code 1 if the run is not failed or cancelled.

    \b
    Examples:
      pypgflow retry 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e
      pypgflow runs --status failed --json | jq -r '.[].id' | xargs -n1 pypgflow retry
    """
    app = database_app(ctx, app_spec)
    if app.retry(run_id):
        click.echo(f"Run {run_id} resumed: its unfinished steps are queued again.")
        return
    status = app.get_run(run_id).status
    raise click.ClickException(
        f"run {run_id} is {status.value}: only failed or cancelled runs can be retried"
    )


@click.command()
@click.argument("run_id")
@app_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, app_spec: str | None) -> None:
    """Cancel a pending or running run.

    Its waiting steps are cancelled; running steps see ctx.cancelled (async
    steps are cancelled). Cancelling a cancelled run again succeeds; exit
    code 1 if the run had already completed or failed.

    \b
    Examples:
      pypgflow cancel 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e
    """
    app = database_app(ctx, app_spec)
    if app.cancel(run_id):
        click.echo(f"Run {run_id} cancelled.")
        return
    status = app.get_run(run_id).status
    if status is RunStatus.CANCELLED:
        click.echo(f"Run {run_id} was already cancelled.")
        return
    raise click.ClickException(f"run {run_id} already finished ({status.value}): not cancelled")
