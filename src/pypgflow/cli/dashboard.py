"""``pypgflow dashboard``: the operators' web dashboard and HTTP API, served with uvicorn.

With ``MODULE:APP`` it shows the app's workflows as its code defines them; without, what the
database knows (``--database-url``, PYPGFLOW_DATABASE_URL, or the embedded default). The token
comes from ``--token`` or PYPGFLOW_DASHBOARD_TOKEN; without either, a random one is made and the
login link printed, as Jupyter does.
"""

from __future__ import annotations

import click

from pypgflow.cli.loading import database_app, user_app
from pypgflow.defaults import DASHBOARD_TOKEN_ENV


def login_url(host: str, port: int, token: str | None) -> str:
    """Where to open the dashboard: the login link with the token when it was made here."""
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):  # noqa: S104  compares a host given by the user; binds nothing
        shown = "127.0.0.1"
    base = f"http://{shown}:{port}"
    return f"{base}/login?token={token}" if token else f"{base}/"


@click.command("dashboard")
@click.argument("app_spec", metavar="[MODULE:APP]", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port."
)
@click.option(
    "--token",
    envvar=DASHBOARD_TOKEN_ENV,
    metavar="TOKEN",
    help="What every page and API call must present [env: "
    f"{DASHBOARD_TOKEN_ENV}; default: a random one, printed with the login link].",
)
@click.option("--read-only", is_flag=True, help="Show no action, and refuse every one.")
@click.pass_context
def dashboard(
    ctx: click.Context,
    app_spec: str | None,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
) -> None:
    """Serve the web dashboard and its JSON API (/api/).

    Pages: overview, runs (filters, bulk retry and cancel), each run (its
    graph, a timeline of attempts, errors and tracebacks, live while it
    moves), failed runs grouped by cause, workflows, instances, schedules.
    Every page and API call needs the token: open the printed link, or
    send Authorization: Bearer TOKEN. Needs pip install 'pypgflow[dashboard]'.

    \b
    Examples:
      pypgflow dashboard myproject.flows:app
      pypgflow --database-url sqlite:///pypgflow-demo.db dashboard
      pypgflow --database-url postgresql://localhost/app dashboard --read-only
      PYPGFLOW_DASHBOARD_TOKEN=s3cret pypgflow dashboard --host 0.0.0.0 --port 9000
      curl -H 'Authorization: Bearer s3cret' http://127.0.0.1:9000/api/runs?status=failed
    """
    from pypgflow.dashboard import create_app
    from pypgflow.dashboard.auth import new_token

    try:
        import uvicorn
    except ImportError:
        raise click.ClickException(
            "the dashboard needs its optional dependencies: pip install 'pypgflow[dashboard]'"
        ) from None
    app = user_app(ctx, app_spec) if app_spec else database_app(ctx, None)
    app.engine.check_schema()
    made = token is None
    token = token or new_token()
    asgi = create_app(app, token=token, read_only=read_only)
    mode = "read-only, " if read_only else ""
    source = app_spec or "the database only"
    click.echo(f"pypgflow dashboard ({mode}{source}) on {app.engine!r}")
    if made:
        click.echo("Open this link to log in (it holds the token, made for this run):")
    else:
        click.echo("Log in with the token given (--token or " + DASHBOARD_TOKEN_ENV + "):")
    click.echo(f"    {login_url(host, port, token if made else None)}", nl=True)
    click.echo("Press Ctrl+C to stop.")
    uvicorn.run(asgi, host=host, port=port, log_level="warning", access_log=False)
