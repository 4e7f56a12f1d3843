"""The ``pypgflow`` group: its global options (``--database-url``, ``--schema``), the turning of
pypgflow's errors into ``Error: ...`` and exit code 1, and the options several commands share."""

from __future__ import annotations

from typing import Any

import click

from pypgflow import defaults
from pypgflow.cli.loading import Config
from pypgflow.cli.output import one_line
from pypgflow.errors import PypgflowError

HELP = f"""pypgflow: durable workflows for Python on PostgreSQL or SQLite.

Commands that run your workflows (worker, start) take MODULE:APP, the
module and attribute of your App (or of a function returning one),
importable from the current directory. The others need only the
database: --database-url (before the command), {defaults.DATABASE_URL_ENV},
or --app MODULE:APP; without any, the embedded default
{defaults.DEFAULT_URL} in the current directory.

Exit codes: 0 success, 1 error (or a failed run with start --wait),
2 usage error.

\b
Examples:
  export {defaults.DATABASE_URL_ENV}=postgresql://postgres@localhost:5432/app
  pypgflow migrate
  pypgflow worker myproject.flows:app --queue default=10
  pypgflow start myproject.flows:app hello --input '{{"name": "World"}}' --wait
  pypgflow runs --status failed
"""


class Group(click.Group):
    """Turns pypgflow's errors into a one-line ``Error: ...`` and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PypgflowError as exc:
            raise click.ClickException(one_line(exc.message)) from exc


@click.group(cls=Group, help=HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar=defaults.DATABASE_URL_ENV,
    metavar="URL",
    help=(
        "Database URL: postgresql://user@host:5432/dbname or sqlite:///path/to/file.db "
        f"[env: {defaults.DATABASE_URL_ENV}; default: {defaults.DEFAULT_URL}]."
    ),
)
@click.option(
    "--schema",
    default=defaults.DEFAULT_SCHEMA,
    show_default=True,
    metavar="NAME",
    help="The database schema holding pypgflow's tables.",
)
@click.version_option(package_name="pypgflow")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, schema: str) -> None:
    """Store the global options for the command that follows (the help is HELP)."""
    source = ctx.get_parameter_source("schema")
    ctx.obj = Config(
        database_url=database_url or None,
        schema=schema,
        schema_given=source not in (None, click.core.ParameterSource.DEFAULT),
    )


app_option = click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    help="Take the database URL and schema from this app instead of --database-url.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table, for scripts."
)
