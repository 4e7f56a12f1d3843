"""A scheduled report: ``gather`` -> ``render`` -> ``deliver``, started by a cron schedule.

:func:`report_workflow` makes the workflow; :func:`schedule_report` registers it on an App
with its cron schedule (``app.schedule``): every worker of the app stores the schedule, and
the leader starts exactly one run per tick, whichever workers come and go
(``pypgflow schedules`` lists it). The run's input is the schedule's ``input``; the tick's
time is the run's ``scheduled_at``.

``gather(input)`` collects the figures (a JSON value), ``render(figures)`` makes the text,
``deliver(text)`` sends it (mail, chat, a file); each is retried on its own, so a failed
delivery does not gather again. The defaults make a small text table of the input's
``"figures"`` and deliver it to the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pypgflow.app import App
from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.cron import Schedule
from pypgflow.errors import InvalidArgument
from pypgflow.workflow import Workflow

#: every day at 08:00 (in the schedule's time zone)
DAILY = "0 8 * * *"


def gather_figures(input: Any) -> dict[str, Any]:
    """The default gather: the input's ``"title"`` and ``"figures"`` (a name -> number
    object), or a demo's."""
    given = input if isinstance(input, dict) else {}
    figures = given.get("figures", {"runs": 42, "failed": 1, "p95_ms": 180})
    if not isinstance(figures, dict):
        raise InvalidArgument(f"the report's figures must be an object, got {figures!r}")
    return {"title": str(given.get("title", "Daily report")), "figures": figures}


def render_text(gathered: dict[str, Any]) -> str:
    """The default render: the title, then one aligned ``name  value`` line per figure."""
    figures = gathered["figures"]
    width = max((len(str(k)) for k in figures), default=0)
    lines = [gathered["title"], "=" * len(gathered["title"])]
    lines += [f"{str(k).ljust(width)}  {v}" for k, v in figures.items()]
    return "\n".join(lines)


def deliver_to_log(text: str, ctx: StepContext) -> dict[str, Any]:
    """The default deliver: the report written to the step's log (replace it with a mail or
    a chat message)."""
    ctx.logger.info("report:\n%s", text)
    return {"delivered": "log", "characters": len(text)}


def report_workflow(
    gather: Callable[[Any], Any] | None = None,
    render: Callable[[Any], str] | None = None,
    deliver: Callable[[str], Any] | None = None,
    *,
    name: str = "report",
    max_attempts: int = 3,
    backoff: Backoff | None = None,
    timeout: float = 300.0,
) -> Workflow:
    """The report workflow named ``name``; its output is what ``deliver`` returns."""
    gatherer = gather or gather_figures
    renderer = render or render_text
    for label, value in (("gather", gatherer), ("render", renderer), ("deliver", deliver)):
        if value is not None and not callable(value):
            raise InvalidArgument(f"report_workflow: {label} must be a function, got {value!r}")
    flow = Workflow(name, max_attempts=max_attempts, backoff=backoff, timeout=timeout)

    @flow.step(name="gather")
    def gather_step(input: Any) -> Any:
        return gatherer(input)

    @flow.step(name="render")
    def render_step(gathered: Any) -> str:
        text = renderer(gathered)
        if not isinstance(text, str):
            raise InvalidArgument(f"render must return text, got {type(text).__name__}")
        return text

    @flow.step(name="deliver")
    def deliver_step(text: str, ctx: StepContext) -> Any:
        return deliver(text) if deliver is not None else deliver_to_log(text, ctx)

    return flow.validate()


def schedule_report(
    app: App,
    workflow: Workflow | None = None,
    cron: str = DAILY,
    *,
    input: Any = None,
    timezone: str = "UTC",
    schedule: str | None = None,
    queue: str | None = None,
) -> Schedule:
    """Register ``workflow`` (default: :func:`report_workflow`'s) on ``app`` and start it at
    every tick of ``cron`` in ``timezone``, on ``input``; the schedule is named ``schedule``
    (default: the workflow's name). Everything is checked here, as ``app.schedule`` does."""
    flow = workflow if workflow is not None else report_workflow()
    return app.schedule(schedule or flow.name, cron, flow, input, queue=queue, timezone=timezone)


#: the input of the starter's first run (``$module``: the starter module's name)
EXAMPLE = '{"title": "Daily report"}'

STARTER = '''\
"""A scheduled report, from `pypgflow new report`: gather -> render -> deliver, started by a
cron schedule that the app's workers keep (one run per tick, whichever workers run).

    pypgflow migrate --app $module:app
    pypgflow worker $module:app                                    # ticks while it leads
    pypgflow schedules --app $module:app                           # the schedule, its next tick
    pypgflow start $module:app report --wait                       # a run now, not at a tick
"""

from typing import Any

from pypgflow import App
from pypgflow.templates import report_workflow, schedule_report

# PYPGFLOW_DATABASE_URL if set, else the SQLite file pypgflow.db in the working directory.
app = App()


def gather(input: Any) -> dict[str, Any]:
    # e.g. counts from your database, an API's figures
    title = input.get("title", "Daily report") if isinstance(input, dict) else "Daily report"
    return {"title": title, "figures": {"orders": 120, "refunds": 3}}


def render(gathered: dict[str, Any]) -> str:
    lines = [gathered["title"]] + [f"{k}: {v}" for k, v in gathered["figures"].items()]
    return "\\n".join(lines)


def deliver(text: str) -> dict[str, Any]:
    # e.g. send it by mail or to a chat channel
    print(text)
    return {"delivered": "stdout", "characters": len(text)}


flow = report_workflow(gather, render, deliver)
schedule_report(app, flow, "0 8 * * *", timezone="UTC")  # every day at 08:00 UTC
'''
