"""``retry`` and ``cancel``: of the runs named (by id or a unique start of it), or of every run
that matches filters, after a confirmation (``--yes`` skips it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import click

from pypgflow.app import App
from pypgflow.cli.filters import describe, filter_options, matching_run_ids, run_filter
from pypgflow.cli.group import app_option
from pypgflow.cli.loading import database_app
from pypgflow.insight import RunFilter
from pypgflow.status import RunStatus


@dataclass(frozen=True)
class Action:
    """What ``retry`` or ``cancel`` does, and to which runs it applies."""

    verb: str  # "retry", "cancel"
    done: str  # "resumed: its unfinished steps are queued again", "cancelled"
    past: str  # "retried", "cancelled"
    #: the statuses --status offers
    applies_to: tuple[RunStatus, ...]
    #: the statuses acted on when filters name none
    default: tuple[RunStatus, ...]
    act: Callable[[App, str], bool]
    #: why a run was not acted on (its status, read afterwards), or None if that is no error
    refused: Callable[[str, RunStatus], str | None]


RETRY = Action(
    verb="retry",
    done="resumed: its unfinished steps are queued again",
    past="retried",
    applies_to=(RunStatus.FAILED, RunStatus.CANCELLED),
    default=(RunStatus.FAILED,),
    act=App.retry,
    refused=lambda run_id, status: (
        f"run {run_id} is {status.value}: only failed or cancelled runs can be retried"
    ),
)
CANCEL = Action(
    verb="cancel",
    done="cancelled",
    past="cancelled",
    applies_to=(RunStatus.PENDING, RunStatus.RUNNING),
    default=(RunStatus.PENDING, RunStatus.RUNNING),
    act=App.cancel,
    refused=lambda run_id, status: (
        None
        if status is RunStatus.CANCELLED
        else f"run {run_id} already finished ({status.value}): not cancelled"
    ),
)


def perform(
    ctx: click.Context,
    action: Action,
    run_ids: Sequence[str],
    app_spec: str | None,
    statuses: Sequence[str],
    workflow: str | None,
    since: datetime | None,
    until: datetime | None,
    yes: bool,
) -> None:
    filtered = bool(statuses or workflow or since or until)
    if run_ids and filtered:
        raise click.UsageError(
            "give run ids or filters (--status, --workflow, --since, --until), not both"
        )
    if not run_ids and not filtered:
        raise click.UsageError(
            f"give the id of a run to {action.verb}, or filters (--status, --workflow, "
            f"--since, --until) to {action.verb} every run that matches them"
        )
    if yes and not filtered:
        raise click.UsageError("--yes only applies with filters")
    if filtered:
        where = run_filter(statuses or [s.value for s in action.default], workflow, since, until)
        app = database_app(ctx, app_spec)
        _perform_on_matches(app, action, where, yes)
        return
    app = database_app(ctx, app_spec)
    resolved = [app.resolve_run_id(run_id) for run_id in run_ids]  # every id known, first
    failures = 0
    for run_id in dict.fromkeys(resolved):
        if action.act(app, run_id):
            click.echo(f"Run {run_id} {action.done}.")
            continue
        status = app.get_run(run_id).status
        why = action.refused(run_id, status)
        if why is None:
            click.echo(f"Run {run_id} was already {status.value}.")
        elif len(resolved) == 1:
            raise click.ClickException(why)
        else:
            click.echo(f"Error: {why}", err=True)
            failures += 1
    if failures:
        raise click.ClickException(f"{failures} of {len(set(resolved))} runs not {action.past}")


def _perform_on_matches(app: App, action: Action, where: RunFilter, yes: bool) -> None:
    """Every run that matches, counted, confirmed, then acted on one by one."""
    matches = list(matching_run_ids(app, where))
    what = describe(where)
    if not matches:
        click.echo(f"No {what}: nothing to {action.verb}.")
        return
    runs = f"{len(matches)} run{'s' if len(matches) != 1 else ''}"
    if not yes:
        click.confirm(f"{action.verb.capitalize()} {runs} ({what})?", abort=True, err=True)
    done = sum(1 for run_id in matches if action.act(app, run_id))
    skipped = len(matches) - done
    note = f" ({skipped} changed meanwhile and were left as they are)" if skipped else ""
    click.echo(f"{action.past.capitalize()} {done} of {runs}{note}.")


run_ids_argument = click.argument("run_ids", metavar="[RUN_ID]...", nargs=-1)


@click.command()
@run_ids_argument
@app_option
@filter_options(
    status_help="With filters: runs in this state (repeatable) [default: failed].",
    statuses=RETRY.applies_to,
)
@click.option("-y", "--yes", is_flag=True, help="With filters: do not ask for confirmation.")
@click.pass_context
def retry(
    ctx: click.Context,
    run_ids: tuple[str, ...],
    app_spec: str | None,
    statuses: tuple[str, ...],
    workflow: str | None,
    since: datetime | None,
    until: datetime | None,
    yes: bool,
) -> None:
    """Resume failed or cancelled runs from their unfinished steps.

    Completed steps are kept, not run again; each resumed step gets a fresh
    attempt budget. Name the runs (by id, or any unique start of it), or
    give filters to retry every run that matches them, after a
    confirmation. Exit code 1 if a run named is not failed or cancelled.

    \b
    Examples:
      pypgflow retry 01a23878-1438-7454-b3c0-d880c8b94d4a
      pypgflow retry 01a23878-1438 01a23878-143a
      pypgflow retry --workflow report --since 2h
      pypgflow retry --workflow report --status cancelled --yes
    """
    perform(ctx, RETRY, run_ids, app_spec, statuses, workflow, since, until, yes)


@click.command()
@run_ids_argument
@app_option
@filter_options(
    status_help="With filters: runs in this state (repeatable) [default: both].",
    statuses=CANCEL.applies_to,
)
@click.option("-y", "--yes", is_flag=True, help="With filters: do not ask for confirmation.")
@click.pass_context
def cancel(
    ctx: click.Context,
    run_ids: tuple[str, ...],
    app_spec: str | None,
    statuses: tuple[str, ...],
    workflow: str | None,
    since: datetime | None,
    until: datetime | None,
    yes: bool,
) -> None:
    """Cancel pending or running runs.

    Their waiting steps are cancelled; running steps see ctx.cancelled
    (async steps are cancelled). Name the runs (by id, or any unique start
    of it), or give filters to cancel every run that matches them, after a
    confirmation. Cancelling a cancelled run again succeeds; exit code 1 if
    a run named had already completed or failed.

    \b
    Examples:
      pypgflow cancel 01a23878-1438-7454-b3c0-d880c8b94d4a
      pypgflow cancel --workflow report --status pending
      pypgflow cancel --workflow report --since 30m --yes
    """
    perform(ctx, CANCEL, run_ids, app_spec, statuses, workflow, since, until, yes)
