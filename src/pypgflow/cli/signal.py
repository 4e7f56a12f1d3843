"""``signal``: send a run a signal, for the wait step waiting for it (``Workflow.wait_for``)."""

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
