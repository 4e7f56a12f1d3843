"""The ``pypgflow`` group: its global options (``--database-url``, ``--schema``, ``--app``),
accepted before the command or after it, the turning of pypgflow's errors into ``Error: ...``
and exit code 1, and the options several commands share."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from pypgflow import __version__, defaults
from pypgflow.cli.loading import Config, config
from pypgflow.cli.output import one_line
from pypgflow.errors import PypgflowError

HELP = f"""pypgflow: durable workflows for Python on PostgreSQL or SQLite.

Commands that run your workflows (worker, start) take MODULE:APP, the
module and attribute of your App (or of a function returning one),
importable from the current directory. The others need only the
database: --database-url (before or after the command),
{defaults.DATABASE_URL_ENV}, or --app MODULE:APP; without any, the
embedded default {defaults.DEFAULT_URL} in the current directory.
Run ids may be shortened to any unique start (as git's commits).

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
    """Turns pypgflow's errors into a one-line ``Error: ...`` and exit code 1, and gives every
    command added the global options, so that they may come after the command too."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PypgflowError as exc:
            raise click.ClickException(one_line(exc.message)) from exc

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        with_global_options(cmd)
        super().add_command(cmd, name)


def with_global_options(command: click.Command) -> click.Command:
    """``command`` (and, for a group, its commands) given ``--database-url`` and ``--schema``,
    unless it has options of those names: given after the command, they override the ones
    given before it, which override the environment."""
    taken = {opt for param in command.params for opt in param.opts}
    command.params += [
        option for option in _global_options() if not taken.intersection(option.opts)
    ]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_global_options(sub)
    return command


def _global_options() -> list[click.Option]:
    return [
        click.Option(
            ["--database-url", "global_database_url"],
            metavar="URL",
            expose_value=False,
            callback=_override,
            help="The database URL, as before the command (given here, it wins) [env: "
            f"{defaults.DATABASE_URL_ENV}].",
        ),
        click.Option(
            ["--schema", "global_schema"],
            metavar="NAME",
            expose_value=False,
            callback=_override,
            help="The schema of pypgflow's tables, as before the command.",
        ),
    ]


def _override(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Store a global option given after the command in this command's context."""
    if value is None:
        return
    given = config(ctx)
    if param.name == "global_database_url":
        ctx.obj = dataclasses.replace(given, database_url=value or None)
    else:
        ctx.obj = dataclasses.replace(given, schema=value, schema_given=True)


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
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    help="For the commands that need only the database: take it from this app.",
)
@click.version_option(__version__, prog_name="pypgflow")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, schema: str, app_spec: str | None) -> None:
    """Store the global options for the command that follows (the help is HELP)."""
    source = ctx.get_parameter_source("schema")
    ctx.obj = Config(
        database_url=database_url or None,
        schema=schema,
        schema_given=source not in (None, click.core.ParameterSource.DEFAULT),
        app_spec=app_spec,
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
