"""``pypgflow demo``: the command around :func:`pypgflow.demo.run_demo` and its database."""

from __future__ import annotations

import click

from pypgflow import defaults
from pypgflow.cli.loading import config
from pypgflow.cli.logs import LOG_FORMATS, configure_logging
from pypgflow.demo import DEMO_DATABASE_URL, run_demo


@click.command()
@click.option(
    "--database-url",
    "demo_url",
    metavar="URL",
    help="Where to store the demo's runs, e.g. postgresql://postgres@127.0.0.1:5432/postgres "
    f"[default: {DEMO_DATABASE_URL}, in the current directory; {defaults.DATABASE_URL_ENV} "
    "is not used].",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    help="Also log the worker's records to stderr (from INFO), as text or one JSON object each.",
)
@click.pass_context
def demo(ctx: click.Context, demo_url: str | None, log_format: str | None) -> None:
    """Run example workflows durably and show their progress.

    Stores 5 runs of two workflows in a database (migrated first), runs a
    worker in this process until they finish, then prints a summary and
    the commands to inspect them. Exit code 1 if a run did not complete.

    \b
    Examples:
      pypgflow demo
      pypgflow demo --database-url postgresql://postgres@127.0.0.1:5432/postgres
    """
    # `pypgflow --database-url URL demo` counts too, but not PYPGFLOW_DATABASE_URL.
    given = ctx.parent.get_parameter_source("database_url") if ctx.parent else None
    if demo_url is None and given is click.core.ParameterSource.COMMANDLINE:
        demo_url = config(ctx).database_url
    undo_logging = configure_logging("INFO", log_format) if log_format else None
    try:
        succeeded = run_demo(demo_url).succeeded
    finally:
        if undo_logging is not None:
            undo_logging()
    if not succeeded:
        ctx.exit(1)
