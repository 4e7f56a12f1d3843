"""FastAPI: a pypgflow App inside a FastAPI application (``pip install 'pypgflow[fastapi]'``).

- :func:`pypgflow_lifespan`: the application's lifespan. It makes the App available to handlers,
  and may migrate its schema and run a worker on the server's own event loop, for deployments
  small enough to need no worker process of their own. At shutdown the worker stops gracefully
  (running steps get ``shutdown_timeout``, the rest go back to their queues) and the App closes.
- :func:`get_app` and :data:`PypgflowApp`: the App as a dependency of a handler, which starts
  runs with ``await app.start_async(...)``.
- :func:`runs_router`: ``GET /runs/{id}`` and ``GET /runs/{id}/result?wait=S``, the second a
  long poll over ``await run.result_async()``: 200 once the run finished, 202 while it goes on.
- :func:`install_error_handlers`: pypgflow's errors as HTTP statuses (unknown run 404, bad
  input 400, ...).
- :func:`mount_dashboard`: the operators' dashboard (:func:`pypgflow.dashboard.create_app`)
  under a path of the application.

No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at run
time, and those of the router's handlers name values of the function that makes them.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from pypgflow.app import App, Run
from pypgflow.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidArgument,
    NotSupported,
    PypgflowError,
    ResultTimeout,
    RunCancelled,
    RunNotFound,
    SchemaNotMigrated,
    SerializationError,
    UnknownWorkflow,
    WorkflowFailed,
)
from pypgflow.integrations import worker_options as checked_worker_options
from pypgflow.records import RunInfo
from pypgflow.worker import Worker

try:
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
    from fastapi.responses import JSONResponse
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise ConfigurationError(
        f"pypgflow.integrations.fastapi needs FastAPI ({exc.name} is missing): "
        "pip install 'pypgflow[fastapi]'"
    ) from exc

__all__ = [
    "PypgflowApp",
    "get_app",
    "install_error_handlers",
    "mount_dashboard",
    "pypgflow_lifespan",
    "result_response",
    "run_summary",
    "runs_router",
]

logger = logging.getLogger("pypgflow.integrations.fastapi")
#: where the lifespan puts the App: the lifespan state (``request.state``) and ``app.state``
STATE_KEY = "pypgflow"

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def pypgflow_lifespan(
    app: App,
    *,
    worker: bool = False,
    queues: dict[str, int] | Sequence[str] | None = None,
    migrate: bool = False,
    close: bool = True,
    lifespan: Lifespan | None = None,
    **worker_options: Any,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that serves ``app`` to the handlers.

    ``migrate``: create or upgrade the schema at startup. ``worker``: run a worker in this
    process, on the server's loop, from startup to shutdown (``queues`` and ``worker_options``,
    e.g. ``shutdown_timeout``, are the :class:`~pypgflow.worker.Worker`'s; the server keeps its
    signals). ``close``: close the App at shutdown. ``lifespan``: the application's own
    lifespan, run inside this one (its state is merged into the requests' state).
    Everything is checked here, when the application is defined.
    """
    if not isinstance(app, App):
        raise InvalidArgument(f"pypgflow_lifespan() takes a pypgflow App, got {app!r}")
    worker_options = checked_worker_options(worker_options, "pypgflow_lifespan()")
    if not worker and (queues is not None or worker_options):
        raise InvalidArgument("queues and worker options need worker=True")
    if worker and not app.workflows:
        raise InvalidArgument(
            "worker=True needs an App with registered workflows (App(url, workflows=[...]))"
        )

    @contextlib.asynccontextmanager
    async def run(application: Any) -> AsyncIterator[dict[str, Any]]:
        state: dict[str, Any] = {STATE_KEY: app}
        application.state.pypgflow = app
        running: asyncio.Task[None] | None = None
        in_process: Worker | None = None
        try:
            if migrate:
                await app.migrate_async()
            if worker:
                # A schema that is missing stops the server at startup, not the worker unseen.
                await asyncio.to_thread(app.engine.check_schema)
                in_process = Worker(app, queues, install_signal_handlers=False, **worker_options)
                running = asyncio.create_task(in_process.run_async(), name="pypgflow-worker")
                running.add_done_callback(_report_worker_end)
            if lifespan is None:
                yield state
            else:
                async with lifespan(application) as inner:
                    yield {**state, **(inner or {})}
        finally:
            if in_process is not None and running is not None:
                in_process.stop()  # no more claims; running steps finish or go back
                with contextlib.suppress(Exception):  # reported by _report_worker_end
                    await running
            if close:
                await asyncio.to_thread(app.close)

    return run


def _report_worker_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the in-process pypgflow worker stopped", exc_info=task.exception())


def get_app(request: Request) -> App:
    """The App that :func:`pypgflow_lifespan` serves: ``app: App = Depends(get_app)``, or
    ``app: PypgflowApp``."""
    found = getattr(request.state, STATE_KEY, None)
    if found is None:
        found = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(found, App):
        raise ConfigurationError(
            "no pypgflow App in this application: create it with "
            "FastAPI(lifespan=pypgflow_lifespan(app))"
        )
    return found


#: a handler's parameter annotated with it receives the App: ``async def h(app: PypgflowApp)``
PypgflowApp = Annotated[App, Depends(get_app)]


def run_summary(info: RunInfo) -> dict[str, Any]:
    """What a client of the application is told of a run: its status, output and, if it failed,
    the error's type, message and step (not the traceback, which stays with the operators)."""
    return {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status.value,
        "created_at": _iso(info.created_at),
        "started_at": _iso(info.started_at),
        "finished_at": _iso(info.finished_at),
        "output": info.output,
        "error": None
        if info.error is None
        else {"type": info.error.type, "message": info.error.message, "step": info.error.where},
    }


def _iso(moment: Any) -> str | None:
    return None if moment is None else str(moment.isoformat())


async def result_response(run: Run, *, wait: float = 0.0) -> JSONResponse:
    """Wait up to ``wait`` seconds for ``run`` (woken when it finishes, not polled), then tell
    where it is: 200 with :func:`run_summary` once it finished (completed, failed or
    cancelled), 202 with a ``Retry-After`` while it goes on."""
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
        raise InvalidArgument(f"wait must be a number of seconds >= 0, got {wait!r}")
    with contextlib.suppress(ResultTimeout, WorkflowFailed, RunCancelled):
        await run.result_async(timeout=wait)
    info = await run.info_async()
    if info.status.finished:
        return JSONResponse(run_summary(info))
    return JSONResponse(run_summary(info), status_code=202, headers={"Retry-After": "1"})


def runs_router(*, prefix: str = "/runs", max_wait: float = 30.0) -> APIRouter:
    """``GET {prefix}/{id}``: a run's :func:`run_summary` (404 if there is none);
    ``GET {prefix}/{id}/result?wait=S``: the same once it finished, waiting up to ``S`` seconds
    (at most ``max_wait``) for it: see :func:`result_response`. Include it with
    ``application.include_router(runs_router())``; it needs :func:`pypgflow_lifespan`."""
    if isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or max_wait < 0:
        raise InvalidArgument(f"max_wait must be a number of seconds >= 0, got {max_wait!r}")
    router = APIRouter(prefix=prefix, tags=["pypgflow"])
    Wait = Annotated[float, Query(ge=0, le=max_wait, description="seconds to wait for the end")]

    @router.get("/{run_id}", name="pypgflow_run")
    async def run_info(run_id: uuid.UUID, app: PypgflowApp) -> dict[str, Any]:
        try:
            return run_summary(await app.get_run_async(str(run_id)))
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @router.get("/{run_id}/result", name="pypgflow_run_result")
    async def run_result(run_id: uuid.UUID, app: PypgflowApp, wait: Wait = 0.0) -> JSONResponse:
        try:
            return await result_response(Run(app, str(run_id)), wait=wait)
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    return router


#: the HTTP status of each of pypgflow's errors a handler may let through; others are 500
ERROR_STATUS: tuple[tuple[type[PypgflowError], int], ...] = (
    (RunNotFound, 404),
    (UnknownWorkflow, 404),
    (IdempotencyConflict, 409),
    (InvalidArgument, 400),
    (SerializationError, 400),
    (NotSupported, 501),
    (DatabaseUnavailable, 503),
    (SchemaNotMigrated, 503),
)


def install_error_handlers(application: FastAPI) -> None:
    """Answer pypgflow's errors raised in handlers with their HTTP status and
    ``{"detail": message}`` (FastAPI's own shape): an unknown run or workflow 404, bad input
    (an input that is not JSON too) 400, a reused idempotency key with another input 409, no database 503."""
    for error, status in ERROR_STATUS:
        application.add_exception_handler(error, _responder(status))


def _responder(status: int) -> Callable[[Request, Exception], JSONResponse]:
    def respond(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return respond


def mount_dashboard(
    application: FastAPI,
    app: App,
    *,
    path: str = "/pypgflow",
    token: str | None = None,
    read_only: bool = False,
) -> None:
    """Serve the operators' dashboard and its API under ``path`` (needs the ``dashboard``
    extra); ``token`` and ``read_only`` as :func:`pypgflow.dashboard.create_app` takes them."""
    if not isinstance(path, str) or not path.startswith("/") or path == "/" or path.endswith("/"):
        raise InvalidArgument(
            f"the dashboard's path must start with '/' and not end with one, e.g. '/pypgflow', "
            f"got {path!r}"
        )
    from pypgflow.dashboard import create_app

    application.mount(path, create_app(app, token=token, read_only=read_only), name="pypgflow")
