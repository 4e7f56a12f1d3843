"""``pypgflow new TEMPLATE``: a starter module written from a workflow template
(:mod:`pypgflow.templates`), ready for ``pypgflow worker MODULE:app``."""

from __future__ import annotations

import keyword
import os
import sys
import tempfile
from pathlib import Path

import click

from pypgflow.errors import InvalidArgument
from pypgflow.templates import TEMPLATES, template


def check_module_name(name: str) -> str:
    """``name`` if it can be imported as a module of its own from the current directory."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise InvalidArgument(
            f"--name {name!r} is not a module name: use letters, digits and _ (e.g. orders_flow)"
        )
    if name in sys.stdlib_module_names or name == "pypgflow":
        raise InvalidArgument(
            f"--name {name!r} would hide the module of that name: choose another, e.g. {name}_flow"
        )
    return name


def write(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` whole or not at all; an existing file only with ``force``."""
    exists = f"{path.name} exists already: pass --force to overwrite it"
    reserved = False
    if not force:
        try:  # the name taken at once, so that a file made meanwhile is never overwritten
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            raise InvalidArgument(exists) from None
        reserved = True
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if reserved:
            path.unlink(missing_ok=True)
        raise


@click.command()
@click.argument("template_name", metavar="TEMPLATE", required=False)
@click.option(
    "--name",
    "module_name",
    metavar="NAME",
    help="The module to write, NAME.py [default: TEMPLATE_flow].",
)
@click.option("--force", is_flag=True, help="Overwrite NAME.py if it exists.")
@click.option("--list", "list_them", is_flag=True, help="List the templates and exit.")
def new(template_name: str | None, module_name: str | None, force: bool, list_them: bool) -> None:
    """Write a starter module from a workflow template into the current directory.

    The module defines an App (on PYPGFLOW_DATABASE_URL, else the SQLite
    file pypgflow.db) and registers the template's workflow, with your
    functions to fill in. Templates: llm_request, webhook, etl, map_reduce,
    saga, report (pypgflow new --list says what each does).

    \b
    Examples:
      pypgflow new --list
      pypgflow new webhook                 # writes webhook_flow.py
      pypgflow new saga --name bookings    # writes bookings.py
      pypgflow worker webhook_flow:app
    """
    if list_them:
        width = max(len(name) for name in TEMPLATES)
        for found in TEMPLATES.values():
            click.echo(f"{found.name.ljust(width)}  {found.summary}")
        return
    if template_name is None:
        raise click.UsageError(f"name a template ({', '.join(TEMPLATES)}), or pass --list")
    chosen = template(template_name)
    module = check_module_name(module_name or f"{chosen.name}_flow")
    path = Path.cwd() / f"{module}.py"
    write(path, chosen.starter(module), force=force)
    click.echo(f"Wrote {path.name} from the template {chosen.name}. Next:")
    click.echo(f"  pypgflow migrate --app {module}:app")
    click.echo(f"  pypgflow worker {module}:app")
    click.echo(
        f"  pypgflow start {module}:app {chosen.name} --input '{chosen.example(module)}' --wait"
    )
