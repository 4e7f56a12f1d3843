"""What the pages and the API read, in one place: the query string checked and turned into the
engine's filters, and the App's verbs and the engine's operators' reads put together into what a
page shows (the overview, the workflows with their graphs and options).

Bad input is refused here with :class:`~pypgflow.errors.InvalidArgument`, naming the parameter;
the routes turn it into a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pypgflow.app import App
from pypgflow.errors import InvalidArgument
from pypgflow.insight import QueueDepth, RunCount, RunFilter, Throughput, WorkflowStats
from pypgflow.records import InstanceInfo
from pypgflow.status import RunStatus
from pypgflow.workflow import resolve_options

DEFAULT_PAGE = 50
MAX_PAGE = 500
MAX_SEARCH = 200
#: the overview's window, and its buckets
WINDOW = timedelta(hours=1)
BUCKET_SECONDS = 60


@dataclass(frozen=True)
class RunQuery:
    """A listing of runs as the query string asked for it."""

    where: RunFilter
    limit: int
    cursor: str | None

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of this listing (with ``changes``), for links."""
        values: dict[str, Any] = {
            "status": ",".join(s.value for s in self.where.statuses),
            "workflow": self.where.workflow,
            "queue": self.where.queue,
            "search": self.where.search,
            "after": self.where.created_after.isoformat() if self.where.created_after else None,
            "before": self.where.created_before.isoformat() if self.where.created_before else None,
            "limit": None if self.limit == DEFAULT_PAGE else str(self.limit),
            "cursor": self.cursor,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v}


def _moment(name: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(
            f"{name} must be an ISO 8601 time (2026-01-31T12:00:00+00:00), got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_query(params: Mapping[str, str]) -> RunQuery:
    """The listing a query string asks for: ``status`` (one or several, comma-separated),
    ``workflow``, ``queue``, ``search``, ``after`` (inclusive) and ``before`` (exclusive) in ISO
    8601, ``limit``, ``cursor``."""
    known = {"status", "workflow", "queue", "search", "after", "before", "limit", "cursor"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidArgument(
            f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    statuses = []
    for value in filter(None, (params.get("status") or "").split(",")):
        try:
            statuses.append(RunStatus(value.strip().lower()))
        except ValueError:
            choices = ", ".join(s.value for s in RunStatus)
            raise InvalidArgument(f"unknown status {value!r} (one of {choices})") from None
    limit_text = params.get("limit") or str(DEFAULT_PAGE)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit_text!r}")
    search = (params.get("search") or "").strip() or None
    if search is not None and len(search) > MAX_SEARCH:
        raise InvalidArgument(f"search is limited to {MAX_SEARCH} characters")
    after = _moment("after", params["after"]) if params.get("after") else None
    before = _moment("before", params["before"]) if params.get("before") else None
    if after and before and after >= before:
        raise InvalidArgument("after must be earlier than before")
    return RunQuery(
        where=RunFilter(
            statuses=tuple(dict.fromkeys(statuses)),
            workflow=(params.get("workflow") or "").strip() or None,
            queue=(params.get("queue") or "").strip() or None,
            search=search,
            created_after=after,
            created_before=before,
        ),
        limit=int(limit_text),
        cursor=params.get("cursor") or None,
    )


def run_ids(values: list[str]) -> list[str]:
    """The run ids of a bulk action, checked: at least one, at most a page."""
    ids = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    if not ids:
        raise InvalidArgument("select at least one run")
    if len(ids) > MAX_PAGE:
        raise InvalidArgument(f"at most {MAX_PAGE} runs at once")
    return ids


# -- workflows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepDefinition:
    """A step as the workflows page shows it: from the code when the app has it, else from the
    newest stored run (where only attempts are known)."""

    name: str
    depends_on: tuple[str, ...]
    is_map: bool
    max_attempts: int | None
    timeout: float | None = None
    backoff: str | None = None


@dataclass(frozen=True)
class WorkflowView:
    name: str
    registered: bool
    steps: list[StepDefinition]
    stats: WorkflowStats
    #: its graph and options come from its stored definition (no code here)
    stored: bool = False


def workflows(app: App) -> list[WorkflowView]:
    """Every workflow the app registers, the database stores the definition of or has runs of,
    with its recent health."""
    # the newest stored blueprint of each workflow (the list comes newest first)
    blueprints = {b["name"]: b for b in reversed(app.engine.stored_definitions())}
    names = sorted(set(app.workflows) | set(app.engine.workflow_names()) | set(blueprints))
    views = []
    for name in names:
        stats = app.engine.workflow_stats(name)
        flow = app.workflows.get(name)
        blueprint = blueprints.get(name)
        if flow is None and blueprint is not None:  # no code here: its stored definition
            steps = [
                StepDefinition(
                    name=step["name"],
                    depends_on=tuple(step["depends_on"]),
                    is_map=bool(step["is_map"]),
                    max_attempts=step["max_attempts"],
                    timeout=step["timeout"],
                    backoff=_backoff_text(**step["backoff"]),
                )
                for step in blueprint["steps"]
            ]
        elif flow is not None:
            steps = []
            for step in flow:
                options = resolve_options(flow, step)
                b = options.backoff
                steps.append(
                    StepDefinition(
                        name=step.name,
                        depends_on=step.depends_on,
                        is_map=step.is_map,
                        max_attempts=options.max_attempts,
                        timeout=options.timeout,
                        backoff=_backoff_text(b.base, b.factor, b.max, b.jitter),
                    )
                )
        else:
            stored = sorted(stats.steps.items(), key=lambda item: item[1].get("position", 0))
            steps = [
                StepDefinition(
                    name=step_name,
                    depends_on=tuple(state.get("depends_on", ())),
                    is_map=bool(state.get("is_map")),
                    max_attempts=state.get("max_attempts"),
                )
                for step_name, state in stored
            ]
        views.append(
            WorkflowView(
                name, flow is not None, steps, stats, flow is None and blueprint is not None
            )
        )
    return views


def _backoff_text(base: float, factor: float, max: float, jitter: float) -> str:
    return f"{base:g}s * {factor:g}^n, max {max:g}s, jitter {jitter:g}"


# -- the overview ------------------------------------------------------------------------------


@dataclass
class Overview:
    counts: dict[RunStatus, RunCount]
    queues: list[QueueDepth]
    throughput: Throughput
    instances: list[InstanceInfo] = field(default_factory=list)

    @property
    def online(self) -> int:
        return sum(1 for i in self.instances if i.status == "online")

    @property
    def leader(self) -> str | None:
        return next((i.instance_id for i in self.instances if i.leader), None)


def overview(app: App, now: datetime) -> Overview:
    return Overview(
        counts=app.engine.run_counts(),
        queues=app.engine.queue_depths(),
        throughput=app.engine.throughput(since=now - WINDOW, bucket_seconds=BUCKET_SECONDS),
        instances=app.instances(),
    )
