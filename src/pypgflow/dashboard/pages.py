"""The dashboard's HTML pages: overview, runs, a run, failures, workflows, instances, schedules,
and the login page.

Every page is rendered by a Jinja2 template with autoescaping on: stored inputs, outputs and
errors are untrusted and shown as text (JSON pretty-printed, then escaped like the rest).
Actions are forms that POST, with the page's CSRF token (checked by the Guard, in
:mod:`~pypgflow.dashboard.auth`), then redirect back (a reload never repeats one); a read-only
dashboard shows none and refuses them all. A run's page refreshes the part that moves
(``/runs/ID/live``, polled by htmx) while the run is pending or running.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pypgflow.cli.output import seconds
from pypgflow.dashboard import charts, graph, reads, timeline
from pypgflow.dashboard.auth import COOKIE
from pypgflow.dashboard.site import Dashboard, render, url
from pypgflow.engines.insight import SCAN_WINDOW
from pypgflow.errors import InvalidArgument
from pypgflow.records import RunInfo
from pypgflow.status import RunStatus, StepStatus, TaskStatus


async def form_fields(request: Request) -> dict[str, list[str]]:
    """A urlencoded form's fields (the Guard has checked its CSRF token already)."""
    return parse_qs((await request.body()).decode("utf-8", "replace"))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this dashboard only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


#: a run page shows the first this many tasks in its timeline and attempts (its graph counts
#: every task)
TASKS_SHOWN = 1000


def step_detail(is_map: bool, task_count: int | None, counts: dict[str, int]) -> str:
    """A run graph node's second line for a map step: its elements done (and failed)."""
    if is_map:
        done = counts.get("completed", 0)
        total = task_count if task_count is not None else sum(counts.values())
        failed = counts.get("failed", 0)
        return f"map {done}/{total} done" + (f", {failed} failed" if failed else "")
    return ""


def step_options(step: reads.StepDefinition) -> str:
    """A workflow graph node's second line: a map, its attempts and timeout."""
    parts = ["map"] if step.is_map else []
    if step.max_attempts:
        parts.append(f"{step.max_attempts} attempts")
    if step.timeout:
        parts.append(f"{seconds(step.timeout)} timeout")
    return " · ".join(parts)


def run_graph(run: RunInfo, by_step: dict[str, dict[str, int]]) -> graph.Graph:
    """The run's DAG, each node coloured by its step's state (running when a task runs);
    ``by_step``: its tasks counted by step and state (``Engine.run_task_counts``)."""
    steps = []
    for step in run.steps:
        counts = by_step.get(step.name, {})
        state = step.status.value
        if step.status is StepStatus.READY and counts.get(TaskStatus.RUNNING.value):
            state = "running"
        detail = step_detail(step.is_map, step.task_count, counts)
        if not detail and step.attempts > 1:
            detail = f"{step.attempts} attempts"
        if not detail and step.duration is not None:
            detail = seconds(step.duration)
        steps.append(graph.GraphStep(step.name, step.depends_on, state, detail, step.is_map))
    return graph.layout(steps)


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    app = dashboard.app

    def page(name: str, build: Callable[[Request], dict[str, Any]], active: str) -> Any:
        async def endpoint(request: Request) -> Response:
            context = await run_in_threadpool(build, request)
            return render(dashboard, request, name, {"active": active, **context})

        return endpoint

    def refuse_if_read_only(request: Request) -> Response | None:
        if dashboard.read_only:
            return render(
                dashboard,
                request,
                "error.html",
                {"status": 403, "message": "This dashboard is read-only: actions are disabled."},
                403,
            )
        return None

    # -- pages -----------------------------------------------------------------------------

    def overview(request: Request) -> dict[str, Any]:
        now = datetime.now(UTC)
        data = reads.overview(app, now)
        return {"data": data, "chart": charts.throughput_chart(data.throughput, now)}

    def runs(request: Request) -> dict[str, Any]:
        query = reads.run_query(request.query_params)
        result = app.engine.find_runs(query.where, limit=query.limit, cursor=query.cursor)
        result = dataclasses.replace(result, runs=app.with_waiting(result.runs))
        older = (
            "/runs?" + urlencode(query.params(cursor=result.next_cursor))
            if result.next_cursor
            else None
        )
        newest = "/runs?" + urlencode(query.params(cursor=None)) if query.cursor else None
        return {
            "query": query,
            "page": result,
            "older": older,
            "newest": newest,
            "statuses": [s.value for s in RunStatus],
            "workflows": sorted(set(app.workflows) | set(app.engine.workflow_names())),
            "scan_window": SCAN_WINDOW,
        }

    def run_context(request: Request) -> dict[str, Any]:
        run_id = str(request.path_params["run_id"])
        run = app.get_run(run_id)
        tasks = app.engine.run_tasks(run_id, limit=TASKS_SHOWN)
        counts = app.engine.run_task_counts(run_id)
        total = sum(n for by_status in counts.values() for n in by_status.values())
        now = datetime.now(UTC)
        attempts = sorted(
            ((task, error) for task in tasks for error in task.errors),
            key=lambda pair: (pair[1].attempt, pair[0].id),
        )
        return {
            "run": run,
            "tasks": tasks,
            "tasks_total": total,
            "graph": run_graph(run, counts),
            "waterfall": timeline.waterfall(run, tasks, now, total),
            "attempts": attempts,
            "live": not run.status.finished,
        }

    def failed(request: Request) -> dict[str, Any]:
        return {"failures": app.engine.failures()}

    def workflows(request: Request) -> dict[str, Any]:
        views = reads.workflows(app)
        graphs = {
            v.name: graph.layout(
                [
                    graph.GraphStep(s.name, s.depends_on, "defined", step_options(s), s.is_map)
                    for s in v.steps
                ]
            )
            for v in views
        }
        return {"workflows": views, "graphs": graphs}

    def instances(request: Request) -> dict[str, Any]:
        return {"instances": app.instances()}

    def schedules(request: Request) -> dict[str, Any]:
        return {"schedules": app.schedules()}

    async def run_live(request: Request) -> Response:
        context = await run_in_threadpool(run_context, request)
        return render(dashboard, request, "_run_live.html", context)

    # -- actions ---------------------------------------------------------------------------

    def act(verb: Callable[[str], bool]) -> Any:
        async def endpoint(request: Request) -> Response:
            denied = refuse_if_read_only(request)
            if denied:
                return denied
            run_id = str(request.path_params["run_id"])
            await run_in_threadpool(verb, run_id)
            return RedirectResponse(url(request, f"/runs/{run_id}"), status_code=303)

        return endpoint

    def act_on_selection(verb: Callable[[str], bool]) -> Any:
        async def endpoint(request: Request) -> Response:
            denied = refuse_if_read_only(request)
            if denied:
                return denied
            fields = await form_fields(request)
            ids = reads.run_ids(fields.get("run_id", []))
            await run_in_threadpool(lambda: [verb(i) for i in ids])
            back = (fields.get("back") or ["/runs"])[0]
            return RedirectResponse(url(request, safe_next(back)), status_code=303)

        return endpoint

    async def redrive(request: Request) -> Response:
        denied = refuse_if_read_only(request)
        if denied:
            return denied
        fields = await form_fields(request)
        try:
            workflow, step, error_type = (
                fields.get(k, [""])[0] for k in ("workflow", "step", "error_type")
            )
        except (KeyError, IndexError):
            raise InvalidArgument("a failure group needs workflow, step and error_type") from None
        if not workflow:
            raise InvalidArgument("a failure group needs workflow, step and error_type")

        def work() -> None:
            for run_id in app.engine.failed_runs_in_group(workflow, step, error_type):
                app.retry(run_id)

        await run_in_threadpool(work)
        return RedirectResponse(url(request, "/failed"), status_code=303)

    # -- login -------------------------------------------------------------------------------

    async def login(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if request.method == "POST":
            fields = await form_fields(request)
            given = (fields.get("token") or [""])[0]
            target = safe_next((fields.get("next") or ["/"])[0])
        else:
            given = request.query_params.get("token", "")
            if not given:
                return render(dashboard, request, "login.html", {"next": target, "wrong": False})
        if not dashboard.credentials.token_ok(given):
            return render(dashboard, request, "login.html", {"next": target, "wrong": True}, 401)
        response = RedirectResponse(url(request, target), status_code=303)
        response.set_cookie(
            COOKIE,
            dashboard.credentials.session,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=url(request, "/"),
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse(url(request, "/login"), status_code=303)
        response.delete_cookie(COOKIE, path=url(request, "/"))
        return response

    return [
        Route("/", page("overview.html", overview, "overview"), methods=["GET"]),
        Route("/runs", page("runs.html", runs, "runs"), methods=["GET"]),
        Route("/runs/retry", act_on_selection(app.retry), methods=["POST"]),
        Route("/runs/cancel", act_on_selection(app.cancel), methods=["POST"]),
        Route("/runs/{run_id:uuid}", page("run.html", run_context, "runs"), methods=["GET"]),
        Route("/runs/{run_id:uuid}/live", run_live, methods=["GET"]),
        Route("/runs/{run_id:uuid}/retry", act(app.retry), methods=["POST"]),
        Route("/runs/{run_id:uuid}/cancel", act(app.cancel), methods=["POST"]),
        Route("/failed", page("failed.html", failed, "failed"), methods=["GET"]),
        Route("/failed/retry", redrive, methods=["POST"]),
        Route("/workflows", page("workflows.html", workflows, "workflows"), methods=["GET"]),
        Route("/instances", page("instances.html", instances, "instances"), methods=["GET"]),
        Route("/schedules", page("schedules.html", schedules, "schedules"), methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
