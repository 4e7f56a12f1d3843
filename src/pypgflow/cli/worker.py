"""``pypgflow worker``: run a worker for the user's app, its queues, timings, leadership and
retention taken from the command line (every default from :mod:`pypgflow.defaults`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import click

from pypgflow import defaults
from pypgflow.cli.loading import user_app
from pypgflow.cli.logs import LOG_FORMATS, configure_logging
from pypgflow.errors import ConfigurationError
from pypgflow.retention import Retention

DAY = 86400.0


def parse_queues(values: Sequence[str], default_slots: int) -> dict[str, int]:
    """``["default=10", "emails"]`` -> ``{"default": 10, "emails": default_slots}``."""
    if not values:
        return {defaults.DEFAULT_QUEUE: default_slots}
    queues: dict[str, int] = {}
    for value in values:
        name, equals, slots_text = value.partition("=")
        name = name.strip()
        if not name:
            raise click.BadParameter(f"{value!r} has no queue name (NAME or NAME=SLOTS)")
        if name in queues:
            raise click.BadParameter(f"queue {name!r} is given twice")
        slots = default_slots
        if equals:
            try:
                slots = int(slots_text)
            except ValueError:
                raise click.BadParameter(
                    f"{value!r}: SLOTS must be a whole number, e.g. {name}=10"
                ) from None
            if slots < 1:
                raise click.BadParameter(f"{value!r}: SLOTS must be at least 1")
        queues[name] = slots
    return queues


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "-q",
    "--queue",
    "queue_specs",
    multiple=True,
    metavar="NAME[=SLOTS]",
    help="A queue to work on, with how many of its steps may run at once (repeatable; "
    f"default: the {defaults.DEFAULT_QUEUE!r} queue).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="SLOTS",
    default=defaults.DEFAULT_SLOTS,
    show_default=True,
    help="Slots of each queue given without =SLOTS.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=defaults.DEFAULT_SHUTDOWN_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long running steps may finish before they are handed back.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=defaults.DEFAULT_POLL_INTERVAL,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for work when no notification arrives.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=defaults.DEFAULT_HEARTBEAT_INTERVAL,
    show_default=True,
    metavar="SECONDS",
    help="How often to tell the database this worker is alive (keep it well under --stale-after).",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="A worker silent this long is offline: its steps are rescued by the others, and this "
    "worker stops its own steps if it cannot reach the database for as long [default: the "
    f"app's, {defaults.DEFAULT_STALE_AFTER:g}].",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=defaults.DEFAULT_LEASE_TTL,
    show_default=True,
    metavar="SECONDS",
    help="How long the leader's lease lasts (renewed every third of it): a leader that dies "
    "is replaced within this time. Give every worker the same value.",
)
@click.option(
    "--keep-completed",
    type=click.FloatRange(min=0),
    default=defaults.KEEP_COMPLETED.total_seconds() / DAY,
    show_default=True,
    metavar="DAYS",
    help="The leader deletes completed and cancelled runs this long after they finished.",
)
@click.option(
    "--keep-failed",
    type=click.FloatRange(min=0),
    default=defaults.KEEP_FAILED.total_seconds() / DAY,
    show_default=True,
    metavar="DAYS",
    help="The leader deletes failed runs this long after they failed.",
)
@click.option(
    "--instance-id",
    metavar="ID",
    help=f"This worker's name in `pypgflow instances` [default: {defaults.INSTANCE_ID_ENVS[0]}, else "
    "host-pid-random].",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log to stderr from this level up.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object each (run_id, step, trace_id, ...).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics (needs pypgflow[prometheus]).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    queue_specs: tuple[str, ...],
    concurrency: int,
    shutdown_timeout: float,
    poll_interval: float,
    heartbeat_interval: float,
    stale_after: float | None,
    lease_ttl: float,
    keep_completed: float,
    keep_failed: float,
    instance_id: str | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
) -> None:
    """Run a worker for the workflows of MODULE:APP.

    It works on the given queues until stopped, logging to stderr.

    SIGTERM or Ctrl-C stops it gracefully: no new work is claimed, running
    steps get --shutdown-timeout seconds to finish, the rest go back to
    their queues. A second signal cancels the running steps at once.

    \b
    Examples:
      pypgflow worker myproject.flows:app
      pypgflow worker myproject.flows:app --queue default=10 --queue emails=2
      pypgflow worker myproject.flows:create_app -q reports -c 4 --shutdown-timeout 120
    """
    try:
        queues = parse_queues(queue_specs, concurrency)
    except click.BadParameter as exc:
        exc.param_hint = "'--queue'"
        raise
    app = user_app(ctx, app_spec)
    if instance_id:
        app.instance_id = instance_id
    undo_logging = configure_logging(log_level, log_format)
    metrics = None if metrics_port is None else serve_metrics(app, metrics_port)
    try:
        app.run_worker(
            queues,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval,
            stale_after=stale_after,
            shutdown_timeout=shutdown_timeout,
            lease_ttl=lease_ttl,
            retention=Retention(
                completed=timedelta(days=keep_completed), failed=timedelta(days=keep_failed)
            ),
        )
    finally:
        if metrics is not None:
            metrics.close()
        undo_logging()


def serve_metrics(app: Any, port: int) -> Any:
    """The app's Prometheus metrics served on ``port`` (see pypgflow.telemetry.prometheus)."""
    try:
        from pypgflow.telemetry.prometheus import serve
    except ImportError as exc:
        raise ConfigurationError(
            f"--metrics-port needs prometheus-client ({exc}): pip install 'pypgflow[prometheus]'"
        ) from None
    try:
        return serve(app, port)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on port {port}: {exc}") from None
