"""What the commands print: tables and field lists, times, durations and value summaries, the
JSON forms of records, and runs' and attempts' errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from pypgflow.errors import AttemptError
from pypgflow.records import InstanceInfo, RunInfo, ScheduleInfo, StepInfo
from pypgflow.status import RunStatus, StepStatus

SUMMARY_WIDTH = 160

# -- layout ---------------------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """Plain-text columns, two spaces apart; columns in ``right`` are right-aligned."""
    body = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    right_aligned = set(right)
    lines = []
    for row in [list(headers), *body]:
        cells = [
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``Label  value`` lines, values aligned; continuation lines of a value are indented."""
    items = list(pairs)
    width = max((len(label) for label, _ in items), default=0)
    indent = "\n" + " " * (width + 2)
    return "\n".join(
        f"{label.ljust(width)}  {value.replace(chr(10), indent)}" for label, value in items
    )


def one_line(message: str) -> str:
    """A (possibly multi-line) error message on one line, its lines joined by ``; ``."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


# -- times and values -----------------------------------------------------------------------------


def when(moment: datetime | None) -> str:
    """A timestamp in the local time zone, to the second."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration for people: 35ms, 1.25s, 12.3s, 4m05s, 2h07m, 3d04h."""
    if value is None:
        return "-"
    value = max(0.0, value)
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 10:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    whole = int(value)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def elapsed(started: datetime | None, finished: datetime | None, *, going: bool) -> float | None:
    """Seconds from start to finish, or to now while still going."""
    if started is None or (finished is None and not going):
        return None
    return ((finished or datetime.now(UTC)) - started).total_seconds()


def from_now(now: datetime, moment: datetime) -> str:
    """``in 5s``, ``in 4m05s``; ``overdue 3s`` for a moment past (no leader is ticking)."""
    delta = (moment - now).total_seconds()
    if delta < 0:
        return f"overdue {ago(now, moment)[:-4]}"
    return f"in {int(delta)}s" if delta < 60 else f"in {seconds(delta)}"


def ago(now: datetime, moment: datetime) -> str:
    """``5s ago``, ``4m05s ago``."""
    age = max(0.0, (now - moment).total_seconds())
    return f"{int(age)}s ago" if age < 60 else f"{seconds(age)} ago"


def summary(value: Any, width: int = SUMMARY_WIDTH) -> str:
    """``value`` as compact JSON on one line, shortened to ``width`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    if len(text) <= width:
        return text
    return f"{text[: width - 3]}... ({len(text)} characters; --json shows all)"


# -- runs and steps as text -----------------------------------------------------------------------


def run_fields(info: RunInfo) -> list[tuple[str, str]]:
    """The labelled lines `pypgflow run` shows about the run itself."""
    going = not info.status.finished
    pairs = [
        ("Run", info.id),
        ("Workflow", info.workflow),
        ("Status", info.status.value),
        ("Queue", f"{info.queue} (priority {info.priority})"),
    ]
    if info.version is not None:
        pairs.insert(2, ("Version", info.version))
    if info.waiting_for_version:
        pairs.append(("Waiting", f"for a worker of version {info.version}: no live worker has it"))
    if info.parent_run_id:
        pairs.append(("Parent", info.parent_run_id))
    if info.forked_from:
        pairs.append(("Forked from", info.forked_from))
    if info.idempotency_key:
        pairs.append(("Idempotency key", info.idempotency_key))
    pairs.append(("Created", when(info.created_at)))
    if info.scheduled_at is not None and info.scheduled_at > info.created_at:
        pairs.append(("Scheduled", when(info.scheduled_at)))
    pairs += [
        ("Started", when(info.started_at)),
        ("Finished", when(info.finished_at)),
        ("Duration", seconds(elapsed(info.started_at, info.finished_at, going=going))),
        ("Input", summary(info.input)),
    ]
    if info.status is RunStatus.COMPLETED:
        pairs.append(("Output", summary(info.output)))
    if info.error:
        pairs.append(("Error", run_error(info.error)))
    return pairs


def step_going(step: StepInfo) -> bool:
    """Whether the step's duration still grows (it has not finished)."""
    return step.status in (StepStatus.WAITING, StepStatus.READY)


def waiting_line(step: StepInfo) -> str:
    """What a waiting step waits for, and since when."""
    since = f" since {when(step.queued_since)}" if step.queued_since is not None else ""
    return f"for {step.waiting_for}{since}"


def step_name(step: StepInfo) -> str:
    """The step's name, with its task count for a map step."""
    if not step.is_map:
        return step.name
    return f"{step.name} [map: {'?' if step.task_count is None else step.task_count}]"


def run_error(error: AttemptError) -> str:
    """A run's error summary: where it failed, after how many attempts, and why."""
    attempts = error.attempt
    after = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    return f"step {error.where!r}{after}: {error.type or 'Error'}: {error.message}"


def attempt_error(error: AttemptError, *, traceback: bool) -> str:
    """One failed attempt, indented, with its traceback if asked."""
    where = f"{error.where} attempt {error.attempt}"
    if error.instance_id:
        where += f" on {error.instance_id}"
    text = f"  {where}: {error.type}: {error.message}".replace("\n", "\n    ")
    if traceback and error.traceback:
        text += "\n" + "\n".join(f"    {line}" for line in error.traceback.rstrip().splitlines())
    return text


# -- JSON -----------------------------------------------------------------------------------------


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (what ``--json`` prints)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def iso_time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def run_json(info: RunInfo, *, steps: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status.value,
        "queue": info.queue,
        "priority": info.priority,
        "idempotency_key": info.idempotency_key,
        "version": info.version,
        "waiting_for_version": info.waiting_for_version,
        "forked_from": info.forked_from,
        "parent_run_id": info.parent_run_id,
        "created_at": iso_time(info.created_at),
        "scheduled_at": iso_time(info.scheduled_at),
        "started_at": iso_time(info.started_at),
        "finished_at": iso_time(info.finished_at),
        "duration": info.duration,
        "input": info.input,
        "output": info.output,
        "error": None if info.error is None else info.error.to_dict(),
    }
    if steps:
        data["steps"] = [step_json(step) for step in info.steps]
    return data


def step_json(step: StepInfo) -> dict[str, Any]:
    return {
        "name": step.name,
        "status": step.status.value,
        "attempts": step.attempts,
        "depends_on": list(step.depends_on),
        "is_map": step.is_map,
        "task_count": step.task_count,
        "started_at": iso_time(step.started_at),
        "finished_at": iso_time(step.finished_at),
        "duration": step.duration,
        "instance_id": step.instance_id,
        "output": step.output,
        "errors": [error.to_dict() for error in step.errors],
        "signal": step.signal,
        "due_at": iso_time(step.due_at),
        "queued_since": iso_time(step.queued_since),
        "waiting_for": step.waiting_for,
        "child_run_ids": list(step.child_run_ids),
        "gate_wait": step.gate_wait,
    }


def instance_json(instance: InstanceInfo) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "hostname": instance.hostname,
        "pid": instance.pid,
        "status": instance.status,
        "queues": instance.queues,
        "load": instance.load,
        "started_at": iso_time(instance.started_at),
        "heartbeat_at": iso_time(instance.heartbeat_at),
        "leader": instance.leader,
    }


def schedule_json(schedule: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "workflow": schedule.workflow,
        "input": schedule.input,
        "queue": schedule.queue,
        "priority": schedule.priority,
        "last_tick_at": iso_time(schedule.last_tick_at),
        "next_tick_at": iso_time(schedule.next_tick_at),
    }
