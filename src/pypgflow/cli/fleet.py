"""What the workers share, read from the database: ``instances`` (the registered workers and the
leader) and ``schedules`` (the stored cron schedules and their ticks; ``schedules delete``)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pypgflow import defaults
from pypgflow.cli.group import app_option, json_option
from pypgflow.cli.loading import database_app, warn
from pypgflow.cli.output import ago, echo_json, from_now, instance_json, schedule_json, table, when


@click.command()
@app_option
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Show an instance as offline once its last heartbeat is this old [default: the "
    f"stale_after of the --app, else {defaults.DEFAULT_STALE_AFTER:g}].",
)
@json_option
@click.pass_context
def instances(
    ctx: click.Context, app_spec: str | None, stale_after: float | None, as_json: bool
) -> None:
    """List the registered worker instances.

    For each: id, host, pid, status (online, or offline once its heartbeat
    is --stale-after old), queues with their slots, load (steps running),
    when it started and its last heartbeat.

    \b
    Examples:
      pypgflow instances
      pypgflow instances --stale-after 60 --json
    """
    app = database_app(ctx, app_spec)
    found = app.instances(stale_after=stale_after)  # None: the app's stale_after
    if as_json:
        echo_json([instance_json(instance) for instance in found])
        return
    if not found:
        click.echo("No worker instances registered.")
        return
    now = datetime.now(UTC)
    rows = [
        (
            instance.instance_id,
            instance.hostname,
            str(instance.pid),
            instance.status,
            ",".join(f"{name}={slots}" for name, slots in sorted(instance.queues.items())),
            str(instance.load),
            when(instance.started_at),
            f"{when(instance.heartbeat_at)} ({ago(now, instance.heartbeat_at)})",
        )
        for instance in found
    ]
    headers = ["INSTANCE", "HOST", "PID", "STATUS", "QUEUES", "LOAD", "STARTED", "LAST HEARTBEAT"]
    click.echo(table(headers, rows, right=[2, 5]))
    leader = next((instance.instance_id for instance in found if instance.leader), None)
    click.echo(f"\nLeader: {leader or 'none (no instance holds the leader lease)'}")


@click.group("schedules", invoke_without_command=True)
@app_option
@json_option
@click.pass_context
def list_schedules(ctx: click.Context, app_spec: str | None, as_json: bool) -> None:
    """List the cron schedules, with their last and next ticks.

    Workers store their app's schedules (app.schedule, @app.job(cron=...))
    when they start; the leader instance starts one run per tick. For each:
    name, cron expression, time zone, workflow, queue, the last tick turned
    into a run and the next tick due. `schedules delete NAME` removes one.

    \b
    Examples:
      pypgflow schedules
      pypgflow schedules --app myproject.flows:app --json
      pypgflow schedules delete nightly-report
    """
    if ctx.invoked_subcommand is not None:
        return
    app = database_app(ctx, app_spec)
    found = app.schedules()
    if as_json:
        echo_json([schedule_json(schedule) for schedule in found])
        return
    if not found:
        click.echo("No schedules stored (workers store their app's schedules when they start).")
        return
    now = datetime.now(UTC)
    rows = [
        (
            schedule.name,
            schedule.cron,
            schedule.timezone,
            schedule.workflow,
            schedule.queue,
            when(schedule.last_tick_at),
            "-"
            if schedule.next_tick_at is None
            else f"{when(schedule.next_tick_at)} ({from_now(now, schedule.next_tick_at)})",
        )
        for schedule in found
    ]
    headers = ["SCHEDULE", "CRON", "TIMEZONE", "WORKFLOW", "QUEUE", "LAST TICK", "NEXT TICK"]
    click.echo(table(headers, rows))


@list_schedules.command("delete")
@click.argument("name")
@app_option
@click.pass_context
def delete_schedule(ctx: click.Context, name: str, app_spec: str | None) -> None:
    """Delete the stored schedule NAME: no more runs start for its ticks.

    For a schedule removed from the code: until no running worker defines
    it, it stays listed. A schedule that the leader's app still defines is
    stored again at the leader's next pass (ticking from then): remove it
    from the code and restart the workers first. Exit code 1 if there is no
    schedule of that name.

    \b
    Examples:
      pypgflow schedules delete nightly-report
    """
    app = database_app(ctx, app_spec)
    if not app.delete_schedule(name):
        known = ", ".join(s.name for s in app.schedules()) or "none"
        raise click.ClickException(f"no schedule named {name!r} (stored: {known})")
    click.echo(f"Schedule {name!r} deleted.")
    defined = app.defined_schedules
    if name in defined:
        warn(
            f"{name!r} is still defined by this app: a leader running it stores it again at its "
            "next pass"
        )
