"""The JSON API on every engine: its shapes (named as RunInfo and StepInfo are), its cursor
pagination and filters, its actions, and a clear 400 for bad input."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import timedelta
from typing import Any

import psycopg
from starlette.testclient import TestClient

from pypgflow import Workflow
from pypgflow.app import App
from tests.conftest import running_worker
from tests.dashboard.conftest import BEARER, SCRIPT

RUN_FIELDS = {
    "id", "workflow", "status", "queue", "priority", "idempotency_key", "created_at",
    "scheduled_at", "started_at", "finished_at", "duration", "input", "output", "error",
    "version", "waiting_for_version", "forked_from", "parent_run_id",
}  # fmt: skip
STEP_FIELDS = {
    "name", "status", "attempts", "depends_on", "is_map", "task_count", "started_at",
    "finished_at", "duration", "instance_id", "output", "errors", "signal", "due_at",
    "queued_since", "waiting_for", "child_run_ids", "gate_wait",
}  # fmt: skip


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=BEARER)
    assert response.status_code == 200, response.text
    return response.json()


def test_runs_are_listed_with_the_fields_of_run_info(
    client: TestClient, stored: dict[str, str]
) -> None:
    body = get(client, "/api/runs")
    assert {r["id"] for r in body["runs"]} == set(stored.values())
    assert all(set(r) == RUN_FIELDS for r in body["runs"])
    assert body["next_cursor"] is None
    failed = get(client, "/api/runs", status="failed")["runs"]
    assert [r["id"] for r in failed] == [stored["failed"]]
    assert failed[0]["error"]["type"] == "ValueError"
    assert failed[0]["input"] == {"note": SCRIPT}
    greet = get(client, "/api/runs", workflow="greet", status="completed,cancelled")["runs"]
    assert {r["id"] for r in greet} == {stored["completed"], stored["cancelled"]}


def test_a_run_has_its_steps_and_tasks(client: TestClient, stored: dict[str, str]) -> None:
    run = get(client, f"/api/runs/{stored['failed']}")
    assert set(run) >= RUN_FIELDS
    assert [s["name"] for s in run["steps"]] == ["prepare", "explode"]
    assert all(set(s) == STEP_FIELDS for s in run["steps"])
    explode = run["steps"][1]
    assert explode["status"] == "failed"
    assert explode["depends_on"] == ["prepare"]
    assert explode["errors"][0]["message"].startswith("cannot handle")
    assert "Traceback" in explode["errors"][0]["traceback"]
    tasks = {t["step"]: t for t in run["tasks"]}
    assert tasks["explode"]["status"] == "failed"
    assert tasks["explode"]["attempt"] == 1
    assert tasks["explode"]["instance_id"]
    assert run["task_counts"] == {"prepare": {"completed": 1}, "explode": {"failed": 1}}
    assert run["tasks_total"] == 2


def test_a_map_larger_than_a_page_of_tasks_is_counted_in_full(client: TestClient, app: App) -> None:
    wide = Workflow("wide")

    @wide.step
    def items(input: Any) -> list[int]:
        return list(range(input["n"]))

    @wide.map(over=items)
    def double(item: int) -> int:
        return 2 * item

    app.register(wide)
    n = 1200
    run = app.start(wide, {"n": n})
    with running_worker(app, {"default": 50}):
        assert len(run.result(timeout=120)) == n
    body = get(client, f"/api/runs/{run.id}")
    assert body["task_counts"] == {"items": {"completed": 1}, "double": {"completed": n}}
    assert body["tasks_total"] == n + 1
    assert len(body["tasks"]) == 1000  # a page of them, the counts are whole
    page = client.get(f"/runs/{run.id}", headers=BEARER).text
    assert f"map {n}/{n} done" in page
    assert f"{n + 1 - 60} more tasks not drawn" in page


def test_pages_of_runs_follow_the_cursor_without_gaps_or_repeats(
    client: TestClient, app: App
) -> None:
    started = {r.id for r in app.start_many("greet", [{"name": str(i)} for i in range(23)])}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = get(client, "/api/runs", **params)
        seen += [r["id"] for r in body["runs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == started
    created = [r["created_at"] for r in get(client, "/api/runs", limit=50)["runs"]]
    assert created == sorted(created, reverse=True)


def test_search_and_queue_filters_read_the_input(client: TestClient, app: App) -> None:
    app.start("greet", {"name": "needle in a haystack"}, queue="special")
    app.start("greet", {"name": "hay"})
    found = get(client, "/api/runs", search="NEEDLE")["runs"]
    assert [r["input"]["name"] for r in found] == ["needle in a haystack"]
    assert [r["queue"] for r in get(client, "/api/runs", queue="special")["runs"]] == ["special"]
    assert get(client, "/api/runs", search="nothing like it")["runs"] == []


def test_the_time_range_bounds_the_runs_by_creation(client: TestClient, app: App) -> None:
    older = app.start("greet", {"name": "older"})
    # half a millisecond past it: SQLite's clock has millisecond resolution
    cut = app.get_run(older.id).created_at + timedelta(microseconds=500)
    time.sleep(0.01)
    newer = {app.start("greet", {"name": f"newer {i}"}).id for i in range(3)}
    after = get(client, "/api/runs", after=cut.isoformat())["runs"]
    assert {r["id"] for r in after} == newer
    before = get(client, "/api/runs", before=cut.isoformat())
    assert [r["id"] for r in before["runs"]] == [older.id]
    paged = get(client, "/api/runs", after=cut.isoformat(), status="pending", limit=2)
    rest = get(
        client, "/api/runs", after=cut.isoformat(), status="pending", limit=2,
        cursor=paged["next_cursor"],
    )  # fmt: skip
    assert {r["id"] for r in paged["runs"] + rest["runs"]} == newer
    assert rest["next_cursor"] is None


def test_retry_and_cancel_act_and_say_when_they_cannot(
    client: TestClient, stored: dict[str, str], app: App
) -> None:
    response = client.post(f"/api/runs/{stored['failed']}/retry", headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": stored["failed"], "retried": True, "status": "pending"}
    again = client.post(f"/api/runs/{stored['completed']}/retry", headers=BEARER)
    assert again.status_code == 409
    assert "only failed or cancelled" in again.json()["error"]
    cancel = client.post(f"/api/runs/{stored['pending']}/cancel", headers=BEARER)
    assert cancel.json()["status"] == "cancelled"
    assert client.post(f"/api/runs/{stored['pending']}/cancel", headers=BEARER).status_code == 409
    bulk = client.post(
        "/api/runs/retry", json={"ids": [stored["pending"], stored["completed"]]}, headers=BEARER
    )
    assert bulk.json() == {"retried": [stored["pending"]]}
    assert app.get_run(stored["pending"]).status.value == "pending"


def test_unknown_runs_are_404_and_bad_input_is_400_naming_the_problem(client: TestClient) -> None:
    missing = client.get("/api/runs/01234567-89ab-7def-8123-456789abcdef", headers=BEARER)
    assert missing.status_code == 404
    assert "no run" in missing.json()["error"]
    assert client.get("/api/runs/not-a-uuid", headers=BEARER).status_code == 404
    for params, words in [
        ({"status": "lost"}, "unknown status 'lost'"),
        ({"limit": "0"}, "limit must be an integer"),
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": str(2**63)}, "limit must be an integer"),
        ({"queue": "a\x00b"}, "queue must not contain the NUL character"),
        ({"search": "\x00"}, "search must not contain the NUL character"),
        ({"workflow": "greet\x00"}, "workflow must not contain the NUL character"),
        ({"cursor": "garbage"}, "invalid cursor"),
        ({"after": "yesterday"}, "after must be an ISO 8601 time"),
        ({"colour": "red"}, "unknown parameter 'colour'"),
    ]:
        response = client.get("/api/runs", params=params, headers=BEARER)
        assert response.status_code == 400, params
        assert words in response.json()["error"], response.json()
    bad = client.post("/api/runs/retry", content=b"[1, 2", headers=BEARER)
    assert bad.status_code == 400
    assert "JSON object" in bad.json()["error"]


def test_workflows_failures_instances_schedules_and_overview(
    client: TestClient, stored: dict[str, str]
) -> None:
    workflows = {w["name"]: w for w in get(client, "/api/workflows")}
    assert set(workflows) == {"greet", "broken"}
    broken = workflows["broken"]
    assert [s["name"] for s in broken["steps"]] == ["prepare", "explode"]
    assert broken["steps"][1]["max_attempts"] == 1
    assert broken["steps"][1]["depends_on"] == ["prepare"]
    assert broken["recent"]["failed"] == 1
    assert broken["recent"]["success_rate"] == 0.0
    assert workflows["greet"]["recent"]["success_rate"] == 1.0
    assert workflows["greet"]["durations"][0]["step"] == "hello"
    groups = get(client, "/api/failures")["groups"]
    assert [(g["workflow"], g["step"], g["error_type"], g["count"]) for g in groups] == [
        ("broken", "explode", "ValueError", 1)
    ]
    redrive = client.post(
        "/api/failures/retry",
        json={"workflow": "broken", "step": "explode", "error_type": "ValueError"},
        headers=BEARER,
    )
    assert redrive.json() == {"retried": [stored["failed"]]}
    assert get(client, "/api/instances") == []  # the worker deregistered as it stopped
    assert get(client, "/api/schedules") == []
    overview = get(client, "/api/overview")
    assert overview["counts"]["completed"] == {"value": 1, "capped": False, "estimated": False}
    assert {q["queue"] for q in overview["queues"]} == {"default"}
    assert sum(r["count"] for r in overview["throughput"]["rows"]) == 4


def forget_definitions(url: str) -> None:
    """As for runs stored before definitions were."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute("DELETE FROM workflow_definitions")
            conn.commit()
    else:
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM pypgflow.workflow_definitions")


def test_without_the_apps_code_the_database_is_enough(
    stored: dict[str, str], database_url: str
) -> None:
    from pypgflow.dashboard import create_app

    with App(database_url) as bare, TestClient(create_app(bare, token="t")) as client:
        headers = {"Authorization": "Bearer t"}
        workflows = {w["name"]: w for w in client.get("/api/workflows", headers=headers).json()}
        assert set(workflows) == {"greet", "broken"}
        assert not workflows["broken"]["registered"]
        assert [s["depends_on"] for s in workflows["broken"]["steps"]] == [[], ["prepare"]]
        # their workers stored their definitions: graphs and options without the code
        assert workflows["broken"]["steps"][1]["max_attempts"] == 1
        page = client.get("/workflows", headers=headers)
        assert page.status_code == 200
        assert "stored definition" in page.text
        assert client.get(f"/runs/{stored['failed']}", headers=headers).status_code == 200
        # with no definition stored, the graph comes from the runs
        forget_definitions(database_url)
        page = client.get("/workflows", headers=headers)
        assert "from stored runs" in page.text
        workflows = {w["name"]: w for w in client.get("/api/workflows", headers=headers).json()}
        assert [s["depends_on"] for s in workflows["broken"]["steps"]] == [[], ["prepare"]]
