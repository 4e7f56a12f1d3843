"""The shop's HTTP API. Serve it with ``uvicorn shop_api.main:create_api --factory``.

- ``POST /orders`` starts a run of ``fulfil_order`` and answers 202 at once, with where to look;
  ``?wait=5`` waits up to 5 s for the run to finish (``await run.result_async()``, woken when it
  does) and answers 200 with its output when it has.
- ``GET /runs/{id}`` and ``GET /runs/{id}/result?wait=S``: from ``runs_router()``.
- ``/pypgflow/``: the operators' dashboard, when ``PYPGFLOW_DASHBOARD_TOKEN`` is set.

The worker runs in the server's process, on its event loop (``pypgflow_lifespan(worker=True)``):
enough for a small shop. A larger one runs ``pypgflow worker shop_api.main:flows_app`` processes
beside the web servers, and drops ``worker=True``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pypgflow import App
from pypgflow.integrations.fastapi import (
    PypgflowApp,
    install_error_handlers,
    mount_dashboard,
    pypgflow_lifespan,
    result_response,
    runs_router,
)
from shop_api.flows import fulfil_order


class Order(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=100)


def flows_app() -> App:
    """The pypgflow App: on PYPGFLOW_DATABASE_URL, else a SQLite file here (``App()``)."""
    return App(workflows=[fulfil_order])


def create_api(flows: App | None = None, *, shutdown_timeout: float = 10.0) -> FastAPI:
    flows = flows if flows is not None else flows_app()
    api = FastAPI(
        title="shop",
        lifespan=pypgflow_lifespan(
            flows, migrate=True, worker=True, queues={"default": 4},
            shutdown_timeout=shutdown_timeout,
        ),
    )  # fmt: skip
    install_error_handlers(api)
    api.include_router(runs_router())
    token = os.environ.get("PYPGFLOW_DASHBOARD_TOKEN")
    if token:
        mount_dashboard(api, flows, path="/pypgflow", token=token)

    @api.post("/orders", status_code=202, response_model=None)
    async def place_order(
        order: Order,
        app: PypgflowApp,
        response: Response,
        wait: float = Query(0.0, ge=0, le=30),
    ) -> JSONResponse | dict[str, str]:
        run = await app.start_async(fulfil_order, order.model_dump())
        if wait:
            return await result_response(run, wait=wait)
        response.headers["Location"] = f"/runs/{run.id}/result"
        return {"run_id": run.id}

    return api
