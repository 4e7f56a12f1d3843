"""The JSON HTTP API under ``/api/``: the dashboard's data and actions, for scripts.

Fields are named as in :class:`~pypgflow.records.RunInfo` and
:class:`~pypgflow.records.StepInfo` (the same JSON as ``pypgflow runs --json``); ``/api/runs`` is
paginated by a cursor (``next_cursor``). Actions are POSTs; bad input is a 400 with
``{"error": "..."}``, an unknown run a 404, an action that does not apply (retrying a completed
run) a 409, any action in read-only mode a 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from pypgflow.cli.output import instance_json, iso_time, run_json, schedule_json
from pypgflow.dashboard import reads
from pypgflow.dashboard.site import Dashboard
from pypgflow.errors import InvalidArgument
from pypgflow.insight import FailureGroup, TaskInfo


def task_json(task: TaskInfo) -> dict[str, Any]:
    return {
        "id": task.id,
        "step": task.step,
        "task_index": task.task_index,
        "status": task.status.value,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "rescues": task.rescues,
        "instance_id": task.instance_id,
        "created_at": iso_time(task.created_at),
        "run_at": iso_time(task.run_at),
        "started_at": iso_time(task.started_at),
        "finished_at": iso_time(task.finished_at),
        "errors": [e.to_dict() for e in task.errors],
    }


def failure_json(group: FailureGroup) -> dict[str, Any]:
    return {
        "workflow": group.workflow,
        "step": group.step,
        "error_type": group.error_type,
        "count": group.count,
        "last_failed_at": iso_time(group.last_failed_at),
        "message": group.message,
        "run_id": group.run_id,
    }


def workflow_json(view: reads.WorkflowView) -> dict[str, Any]:
    s = view.stats
    return {
        "name": view.name,
        "registered": view.registered,
        "steps": [
            {
                "name": d.name,
                "depends_on": list(d.depends_on),
                "is_map": d.is_map,
                "max_attempts": d.max_attempts,
                "timeout": d.timeout,
                "backoff": d.backoff,
            }
            for d in view.steps
        ],
        "recent": {
            "finished": s.finished,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
            "success_rate": s.success_rate,
        },
        "durations": [
            {"step": d.step, "count": d.count, "p50": d.p50, "p95": d.p95} for d in s.durations
        ],
    }


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; InvalidArgument (400) for anything else."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidArgument("the request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return data


def routes(dashboard: Dashboard) -> list[BaseRoute]:
    app = dashboard.app

    def refuse_if_read_only() -> JSONResponse | None:
        if dashboard.read_only:
            return JSONResponse(
                {"error": "this dashboard is read-only: actions are disabled"}, status_code=403
            )
        return None

    async def list_runs(request: Request) -> JSONResponse:
        query = reads.run_query(request.query_params)
        page = await run_in_threadpool(
            app.engine.find_runs, query.where, limit=query.limit, cursor=query.cursor
        )
        return JSONResponse(
            {
                "runs": [
                    run_json(run, steps=False)
                    for run in await run_in_threadpool(app.with_waiting, page.runs)
                ],
                "next_cursor": page.next_cursor,
                "window_full": page.window_full,
            }
        )

    async def get_run(request: Request) -> JSONResponse:
        run_id = str(request.path_params["run_id"])
        info = await run_in_threadpool(app.get_run, run_id)
        tasks = await run_in_threadpool(app.engine.run_tasks, run_id)
        counts = await run_in_threadpool(app.engine.run_task_counts, run_id)
        total = sum(n for by_status in counts.values() for n in by_status.values())
        return JSONResponse(
            {
                **run_json(info, steps=True),
                "tasks": [task_json(t) for t in tasks],  # the first 1,000
                "task_counts": counts,  # every task, by step and state
                "tasks_total": total,
            }
        )

    def act(verb: Callable[[str], bool], done: str, refused: str) -> Callable[..., Any]:
        async def endpoint(request: Request) -> JSONResponse:
            denied = refuse_if_read_only()
            if denied:
                return denied
            run_id = str(request.path_params["run_id"])
            changed = await run_in_threadpool(verb, run_id)
            status = (await run_in_threadpool(app.get_run, run_id)).status.value
            if not changed:
                return JSONResponse(
                    {
                        "error": refused.format(id=run_id, status=status),
                        "id": run_id,
                        "status": status,
                    },
                    status_code=409,
                )
            return JSONResponse({"id": run_id, done: True, "status": status})

        return endpoint

    def act_on_many(verb: Callable[[str], bool], done: str) -> Callable[..., Any]:
        async def endpoint(request: Request) -> JSONResponse:
            denied = refuse_if_read_only()
            if denied:
                return denied
            body = await json_body(request)
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise InvalidArgument('give the runs as {"ids": ["RUN_ID", ...]}')
            changed = await run_in_threadpool(lambda: [i for i in reads.run_ids(ids) if verb(i)])
            return JSONResponse({done: changed})

        return endpoint

    async def failures(request: Request) -> JSONResponse:
        found = await run_in_threadpool(app.engine.failures)
        return JSONResponse(
            {
                "groups": [failure_json(g) for g in found.groups],
                "scanned": found.scanned,
                "window_full": found.window_full,
            }
        )

    async def retry_failure_group(request: Request) -> JSONResponse:
        denied = refuse_if_read_only()
        if denied:
            return denied
        body = await json_body(request)
        fields = [body.get(k) for k in ("workflow", "step", "error_type")]
        if not all(isinstance(f, str) for f in fields):
            raise InvalidArgument(
                'give the group as {"workflow": ..., "step": ..., "error_type": ...}'
            )
        workflow, step, error_type = (str(f) for f in fields)

        def redrive() -> list[str]:
            ids = app.engine.failed_runs_in_group(workflow, step, error_type)
            return [i for i in ids if app.retry(i)]

        return JSONResponse({"retried": await run_in_threadpool(redrive)})

    async def workflows(request: Request) -> JSONResponse:
        views = await run_in_threadpool(reads.workflows, app)
        return JSONResponse([workflow_json(v) for v in views])

    async def instances(request: Request) -> JSONResponse:
        found = await run_in_threadpool(app.instances)
        return JSONResponse([instance_json(i) for i in found])

    async def schedules(request: Request) -> JSONResponse:
        found = await run_in_threadpool(app.schedules)
        return JSONResponse([schedule_json(s) for s in found])

    async def overview(request: Request) -> JSONResponse:
        data = await run_in_threadpool(reads.overview, app, datetime.now(UTC))
        return JSONResponse(
            {
                "counts": {
                    status.value: {"value": c.value, "capped": c.capped, "estimated": c.estimated}
                    for status, c in data.counts.items()
                },
                "queues": [
                    {
                        "queue": q.queue,
                        "due": q.due,
                        "delayed": q.delayed,
                        "running": q.running,
                        "lag": q.lag,
                        "capped": q.capped,
                    }
                    for q in data.queues
                ],
                "throughput": {
                    "since": iso_time(data.throughput.since),
                    "bucket_seconds": data.throughput.bucket_seconds,
                    "capped": data.throughput.capped,
                    "rows": [
                        {
                            "bucket_start": iso_time(r.bucket_start),
                            "workflow": r.workflow,
                            "queue": r.queue,
                            "status": r.status.value,
                            "count": r.count,
                        }
                        for r in data.throughput.rows
                    ],
                },
                "instances_online": data.online,
                "leader": data.leader,
            }
        )

    retried = "run {id} is {status}: only failed or cancelled runs can be retried"
    cancelled = "run {id} is {status}: it has finished already"
    return [
        Route("/api/runs", list_runs, methods=["GET"]),
        Route("/api/runs/retry", act_on_many(app.retry, "retried"), methods=["POST"]),
        Route("/api/runs/cancel", act_on_many(app.cancel, "cancelled"), methods=["POST"]),
        Route("/api/runs/{run_id:uuid}", get_run, methods=["GET"]),
        Route(
            "/api/runs/{run_id:uuid}/retry", act(app.retry, "retried", retried), methods=["POST"]
        ),
        Route(
            "/api/runs/{run_id:uuid}/cancel",
            act(app.cancel, "cancelled", cancelled),
            methods=["POST"],
        ),
        Route("/api/failures", failures, methods=["GET"]),
        Route("/api/failures/retry", retry_failure_group, methods=["POST"]),
        Route("/api/workflows", workflows, methods=["GET"]),
        Route("/api/instances", instances, methods=["GET"]),
        Route("/api/schedules", schedules, methods=["GET"]),
        Route("/api/overview", overview, methods=["GET"]),
    ]
