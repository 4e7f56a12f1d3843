"""Which runs a command is about: moments on the command line (``--since``, ``--until``,
``--run-at``), the filters ``runs``, ``retry`` and ``cancel`` share (``--status``, ``--workflow``,
``--since``, ``--until``), and every run that matches them, read page after page."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pypgflow.app import App
from pypgflow.insight import RunFilter
from pypgflow.status import RunStatus

F = TypeVar("F", bound=Callable[..., Any])

#: runs read per page when a command acts on every run that matches
PAGE = 1000
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EXAMPLE = "2025-06-01T09:30:00+02:00"

if TYPE_CHECKING:
    _ParamType = click.ParamType[datetime]
else:  # generic only in recent versions of click
    _ParamType = click.ParamType


class Moment(_ParamType):
    """An instant: ISO 8601 with a UTC offset (``Z`` for UTC); with ``ago``, also a duration
    back from now (``90s``, ``15m``, ``2h``, ``7d``, ``1w``). A time without an offset is
    refused: it would mean the time of whichever machine reads it."""

    name = "moment"

    def __init__(self, *, ago: bool) -> None:
        self.ago = ago

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "TIME|AGO" if self.ago else "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        if self.ago and (match := _AGO.fullmatch(text)):
            return datetime.now(UTC) - timedelta(seconds=float(match[1]) * _UNIT[match[2]])
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            also = ", or how long ago (90s, 15m, 2h, 7d, 1w)" if self.ago else ""
            self.fail(
                f"{text!r} is not a time: give ISO 8601 with a UTC offset, e.g. {EXAMPLE} or "
                f"2025-06-01T07:30:00Z{also}",
                param,
                ctx,
            )
        if moment.tzinfo is None or moment.utcoffset() is None:
            self.fail(
                f"{text!r} has no UTC offset: add one, e.g. {text}Z (UTC) or {text}+02:00",
                param,
                ctx,
            )
        return moment


def filter_options(
    *, status_help: str, statuses: Sequence[RunStatus] = tuple(RunStatus)
) -> Callable[[F], F]:
    """``--status`` (repeatable, one of ``statuses``), ``--workflow``, ``--since`` and
    ``--until``."""

    def decorate(fn: F) -> F:
        for option in reversed(
            [
                click.option(
                    "--status",
                    "statuses",
                    multiple=True,
                    type=click.Choice([s.value for s in statuses], case_sensitive=False),
                    help=status_help,
                ),
                click.option("--workflow", metavar="NAME", help="Only runs of this workflow."),
                click.option(
                    "--since",
                    type=Moment(ago=True),
                    help="Only runs created at or after this time (ISO 8601 with an offset), or "
                    "this long ago (15m, 2h, 7d).",
                ),
                click.option(
                    "--until",
                    type=Moment(ago=True),
                    help="Only runs created before this time (or this long ago).",
                ),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


def run_filter(
    statuses: Sequence[str],
    workflow: str | None,
    since: datetime | None,
    until: datetime | None,
) -> RunFilter:
    """The filters as the engines' reads take them; a usage error for an empty time range."""
    if since is not None and until is not None and since >= until:
        raise click.UsageError(f"--since ({since.isoformat()}) is not before --until")
    return RunFilter(
        statuses=tuple(RunStatus(s.lower()) for s in dict.fromkeys(statuses)),
        workflow=workflow,
        created_after=since,
        created_before=until,
    )


def describe(where: RunFilter) -> str:
    """The filters in words: ``failed runs of workflow 'report' created since ...``."""
    statuses = " or ".join(s.value for s in where.statuses)
    text = f"{statuses} runs" if statuses else "runs"
    if where.workflow:
        text += f" of workflow {where.workflow!r}"
    if where.created_after:
        text += f" created since {where.created_after.isoformat(timespec='seconds')}"
    if where.created_before:
        joined = " and before" if where.created_after else " created before"
        text += f"{joined} {where.created_before.isoformat(timespec='seconds')}"
    return text


def matching_run_ids(app: App, where: RunFilter) -> Iterator[str]:
    """Every run that matches, newest first, read a page at a time (keyset pages)."""
    cursor: str | None = None
    while True:
        page = app.engine.find_runs(where, limit=PAGE, cursor=cursor)
        for info in page.runs:
            yield info.id
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
