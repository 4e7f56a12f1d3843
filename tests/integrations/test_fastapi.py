"""pypgflow.integrations.fastapi, through the example shop (examples/fastapi_app) on each
engine: runs started from handlers, completed by the worker its lifespan runs in process,
waited for over HTTP; the worker stopped gracefully at shutdown; the dashboard mounted."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from shop_api.flows import fulfil_order
from shop_api.main import create_api

from pypgflow import ConfigurationError, InvalidArgument, Workflow
from pypgflow.app import App
from pypgflow.integrations.fastapi import (
    PypgflowApp,
    install_error_handlers,
    mount_dashboard,
    pypgflow_lifespan,
    result_response,
    runs_router,
)
from pypgflow.status import RunStatus

pytestmark = pytest.mark.timeout(60)


def test_the_shop_takes_an_order_and_its_in_process_worker_fulfils_it(database_url: str) -> None:
    flows = App(database_url, workflows=[fulfil_order])
    with TestClient(create_api(flows)) as client:
        placed = client.post("/orders", json={"sku": "book", "quantity": 2})
        assert placed.status_code == 202
        run_id = placed.json()["run_id"]
        assert placed.headers["location"] == f"/runs/{run_id}/result"
        done = client.get(f"/runs/{run_id}/result", params={"wait": 10})
        assert done.status_code == 200
        assert done.json()["status"] == "completed"
        assert done.json()["output"] == "2 x book: 24 EUR"
        assert client.get(f"/runs/{run_id}").json()["output"] == "2 x book: 24 EUR"
        waited = client.post("/orders", params={"wait": 10}, json={"sku": "pen", "quantity": 3})
        assert (waited.status_code, waited.json()["output"]) == (200, "3 x pen: 6 EUR")
        # A failed run is an answer too: 200, with its error's type and message, no traceback.
        failed = client.post("/orders", params={"wait": 10}, json={"sku": "car", "quantity": 1})
        assert failed.status_code == 200
        assert failed.json()["status"] == "failed"
        assert failed.json()["error"] == {
            "type": "NonRetryable",
            "message": "we sell no 'car'",
            "step": "price",
        }
        assert client.post("/orders", json={"sku": "pen", "quantity": 0}).status_code == 422
        missing = "01930000-0000-7000-8000-000000000000"
        assert client.get(f"/runs/{missing}").status_code == 404
        assert client.get(f"/runs/{missing}/result").status_code == 404
        assert client.get("/runs/not-a-uuid").status_code == 422
        assert client.get(f"/runs/{run_id}/result", params={"wait": 31}).status_code == 422
        assert len(flows.instances()) == 1  # the lifespan's worker, while the app serves
    # The lifespan closed the App at shutdown; its worker left the instances.
    with App(database_url, workflows=[fulfil_order]) as after:
        assert after.instances() == []
        assert after.get_run(run_id).status is RunStatus.COMPLETED


def test_shutdown_lets_running_steps_finish_and_hands_back_the_rest(database_url: str) -> None:
    slow = Workflow("slow", max_attempts=1)
    began = threading.Event()
    release = threading.Event()

    @slow.step
    async def wait_for_release(input: str) -> str:
        began.set()
        if not release.is_set():
            await asyncio.sleep(30)  # cut short by the shutdown
        return input

    quick = Workflow("quick")
    quick.step(name="echo")(lambda input: input)

    flows = App(database_url, workflows=[slow, quick])
    api = FastAPI(lifespan=pypgflow_lifespan(flows, worker=True, shutdown_timeout=0.3))

    @api.post("/start/{name}")
    async def start(name: str, app: PypgflowApp) -> dict[str, str]:
        return {"run_id": (await app.start_async(name, name)).id}

    with TestClient(api) as client:
        slow_id = client.post("/start/slow").json()["run_id"]
        assert began.wait(10)
    with App(database_url, workflows=[slow]) as after:
        info = after.get_run(slow_id)
        assert info.status is RunStatus.RUNNING
        assert info.steps[0].attempts == 0  # handed back: the interrupted attempt is not counted
        assert after.instances() == []
        release.set()
        again = FastAPI(lifespan=pypgflow_lifespan(after, worker=True, close=False))
        again.include_router(runs_router())
        with TestClient(again) as client:
            answer = client.get(f"/runs/{slow_id}/result", params={"wait": 10}).json()
            assert (answer["status"], answer["output"]) == ("completed", "slow")


def test_a_run_still_going_is_a_202_and_the_app_is_served_without_a_worker(
    database_url: str,
) -> None:
    flows = App(database_url, workflows=[fulfil_order])
    api = FastAPI(lifespan=pypgflow_lifespan(flows))  # no worker: runs wait for one
    api.include_router(runs_router(prefix="/api/runs", max_wait=1))
    install_error_handlers(api)

    @api.post("/orders")
    async def place(app: PypgflowApp) -> Any:
        return await result_response(
            await app.start_async("fulfil_order", {"sku": "mug", "quantity": 1}), wait=0.1
        )

    @api.post("/unknown")
    async def unknown(app: PypgflowApp) -> Any:
        return {"run_id": (await app.start_async("no_such_flow")).id}

    @api.post("/bad")
    async def bad(app: PypgflowApp) -> Any:
        return {"run_id": (await app.start_async(fulfil_order, {1, 2})).id}

    with TestClient(api) as client:
        going = client.post("/orders")
        assert going.status_code == 202
        assert going.headers["retry-after"] == "1"
        assert going.json()["status"] == "pending"
        assert client.get(f"/api/runs/{going.json()['id']}/result").status_code == 202
        assert client.get(f"/api/runs/{going.json()['id']}/result?wait=2").status_code == 422
        assert flows.instances() == []
        nowhere = client.post("/unknown")
        assert nowhere.status_code == 404
        assert "no_such_flow" in nowhere.json()["detail"]
        assert client.post("/bad").status_code == 400


def test_the_applications_own_lifespan_runs_inside(database_url: str) -> None:
    flows = App(database_url, workflows=[fulfil_order])
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def own(application: FastAPI) -> AsyncIterator[dict[str, Any]]:
        seen.append("up")
        yield {"greeting": "hello"}
        seen.append("down")

    api = FastAPI(lifespan=pypgflow_lifespan(flows, lifespan=own))

    @api.get("/")
    async def index(request: Request, app: PypgflowApp) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "same": app is flows}

    with TestClient(api) as client:
        assert client.get("/").json() == {"greeting": "hello", "same": True}
    assert seen == ["up", "down"]


def test_the_dependency_without_the_lifespan_says_what_is_missing() -> None:
    api = FastAPI()

    @api.get("/")
    async def index(app: PypgflowApp) -> str:
        return str(app)

    with TestClient(api) as client, pytest.raises(ConfigurationError, match="pypgflow_lifespan"):
        client.get("/")


def test_the_lifespans_options_are_checked_when_the_application_is_defined(
    database_url: str,
) -> None:
    with App(database_url) as empty, App(database_url, workflows=[fulfil_order]) as flows:
        with pytest.raises(InvalidArgument, match="registered workflows"):
            pypgflow_lifespan(empty, worker=True)
        with pytest.raises(InvalidArgument, match="unknown worker options shutdown_timout"):
            pypgflow_lifespan(flows, worker=True, shutdown_timout=1)
        with pytest.raises(InvalidArgument, match="install_signal_handlers"):
            pypgflow_lifespan(flows, worker=True, install_signal_handlers=True)
        with pytest.raises(InvalidArgument, match="need worker=True"):
            pypgflow_lifespan(flows, queues=["default"])
        with pytest.raises(InvalidArgument, match="takes a pypgflow App"):
            pypgflow_lifespan("sqlite:///x.db")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="max_wait"):
            runs_router(max_wait=-1)
        with pytest.raises(InvalidArgument, match="path"):
            mount_dashboard(FastAPI(), flows, path="pypgflow", token="t")


def test_a_missing_schema_stops_the_server_at_startup(empty_pg_url: str) -> None:
    flows = App(empty_pg_url, workflows=[fulfil_order])
    api = FastAPI(lifespan=pypgflow_lifespan(flows, worker=True))
    with pytest.raises(Exception, match="migrate"), TestClient(api):
        pass
    flows.close()


def test_migrate_creates_the_schema_at_startup(empty_pg_url: str) -> None:
    with TestClient(create_api(App(empty_pg_url, workflows=[fulfil_order]))) as client:
        placed = client.post("/orders", params={"wait": 10}, json={"sku": "mug", "quantity": 2})
        assert placed.json()["output"] == "2 x mug: 16 EUR"


def test_the_dashboard_is_mounted_under_its_path(database_url: str) -> None:
    flows = App(database_url, workflows=[fulfil_order])
    run = flows.start(fulfil_order, {"sku": "pen", "quantity": 1})
    api = FastAPI(lifespan=pypgflow_lifespan(flows))
    mount_dashboard(api, flows, path="/ops", token="secret-token")
    with TestClient(api) as client:
        refused = client.get("/ops/api/overview")
        assert refused.status_code == 401
        assert "Bearer" in refused.json()["error"]  # the API's answer, not a login page
        to_login = client.get("/ops/runs", follow_redirects=False)
        assert to_login.headers["location"] == "/ops/login?next=%2Fruns"
        bearer = {"Authorization": "Bearer secret-token"}
        listed = client.get("/ops/api/runs", headers=bearer)
        assert [r["id"] for r in listed.json()["runs"]] == [run.id]
        login = client.get("/ops/login", params={"token": "secret-token"}, follow_redirects=False)
        assert login.status_code in (302, 303)
        assert login.headers["location"].startswith("/ops/")
        page = client.get(f"/ops/runs/{run.id}")
        assert page.status_code == 200
        assert 'href="/ops/runs' in page.text
        assert 'href="/ops/static/style.css"' in page.text
        assert 'href="/runs' not in page.text
        assert client.get("/ops/static/style.css").status_code == 200
        csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        cancelled = client.post(
            f"/ops/runs/{run.id}/cancel", data={"csrf_token": csrf[1]}, follow_redirects=False
        )
        assert cancelled.headers["location"] == f"/ops/runs/{run.id}"
        assert flows.get_run(run.id).status is RunStatus.CANCELLED
        assert client.get("/runs").status_code == 404  # nothing of it outside its path
