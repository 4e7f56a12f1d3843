"""``pypgflow migrate``: create, upgrade or check pypgflow's schema in the database."""

from __future__ import annotations

import click

from pypgflow.cli.group import app_option
from pypgflow.cli.loading import config, database_app


@click.command()
@app_option
@click.option(
    "--check", is_flag=True, help="Apply nothing: exit 1 if the schema is missing or out of date."
)
@click.pass_context
def migrate(ctx: click.Context, app_spec: str | None, check: bool) -> None:
    """Create or upgrade pypgflow's schema in the database.

    Safe to repeat: an up-to-date schema is left as it is; concurrent runs
    wait for each other.

    \b
    Examples:
      pypgflow --database-url postgresql://postgres@localhost:5432/app migrate
      pypgflow migrate --app myproject.flows:app
      pypgflow migrate --check    # in a deploy pipeline: is the schema current?
    """
    app = database_app(ctx, app_spec)
    path = getattr(app.engine, "path", None)  # SQLite has a file, not a schema
    where = (
        f"the SQLite database {path}"
        if path
        else f"schema {getattr(app.engine, 'schema', config(ctx).schema)!r}"
    )
    version = getattr(app.engine, "latest_version", None)
    at_version = f" at version {version}" if version is not None else ""
    if check:
        app.engine.check_schema()
        click.echo(f"{where[0].upper()}{where[1:]} is up to date{at_version}.")
        return
    applied = app.migrate()
    if applied:
        versions = ", ".join(str(v) for v in applied)
        click.echo(f"Migrated {where}{at_version} (applied: {versions}).")
    else:
        click.echo(f"{where[0].upper()}{where[1:]} is already up to date{at_version}.")
