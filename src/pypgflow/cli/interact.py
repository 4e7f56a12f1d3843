"""``signal`` and ``fork``: steering one run. A signal goes to the wait step waiting for it
(``Workflow.wait_for``); a fork re-drives a run from one of its steps, keeping the outputs of
the steps before it (``App.fork``)."""

from __future__ import annotations

import json
from typing import Any

import click

from pypgflow.cli.group import app_option
from pypgflow.cli.loading import database_app


@click.command("signal")
@click.argument("run_id")
@click.argument("name")
@click.option(
    "--data",
    "data_text",
    metavar="JSON",
    default="null",
    show_default=True,
    help="The signal's data, as JSON: what the wait step completes with.",
)
@app_option
@click.pass_context
def send_signal(
    ctx: click.Context, run_id: str, name: str, data_text: str, app_spec: str | None
) -> None:
    """Send the signal NAME to a run (RUN_ID: the id, or any unique start of
    it).

    The wait step waiting for it completes with the data, and the run goes
    on. A signal that no step waits for yet is kept for the first wait step
    for it that the run reaches. Exit code 1 for an unknown or finished run.

    \b
    Examples:
      pypgflow signal 01a23878-1438 approved --data '{"by": "ana"}'
      pypgflow signal 01a23878-1438 resume
    """
    try:
        data: Any = json.loads(data_text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--data") from None
    app = database_app(ctx, app_spec)
    resolved = app.resolve_run_id(run_id)
    step = app.signal(resolved, name, data)
    if step is None:
        click.echo(f"Signal {name!r} kept for run {resolved}: no step waits for it yet.")
    else:
        click.echo(f"Signal {name!r} sent to run {resolved}: step {step!r} completed.")


@click.command("fork")
@click.argument("run_id")
@click.option(
    "--from", "from_step", required=True, metavar="STEP", help="The first step to run again."
)
@click.option(
    "--input",
    "input_text",
    metavar="JSON",
    default=None,
    help="The new run's input, as JSON [default: the original run's].",
)
@app_option
@click.pass_context
def fork(
    ctx: click.Context, run_id: str, from_step: str, input_text: str | None, app_spec: str | None
) -> None:
    """Start a new run of the same workflow version as RUN_ID (its id, or any
    unique start of it) that keeps the outputs of the steps before STEP and
    runs STEP and every step after it again: a re-drive after a fix.

    The original run is left as it is. Prints the new run's id.

    \b
    Examples:
      pypgflow fork 01a23878-1438 --from charge
      pypgflow fork 01a23878-1438 --from reserve --input '{"sku": "C3"}'
    """
    data: Any = None
    if input_text is not None:
        try:
            data = json.loads(input_text)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    app = database_app(ctx, app_spec)
    resolved = app.resolve_run_id(run_id)
    run = app.fork(resolved, from_step, data)
    click.echo(run.id)
    click.echo(f"Forked run {resolved} from step {from_step!r}: new run {run.id}.", err=True)
