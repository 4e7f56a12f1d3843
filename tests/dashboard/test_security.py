"""Deny by default: no page, API call or action without the token; no action by GET, nor by a
cookie session without the page's CSRF token; none at all when read-only; and what runs store
is shown as text, never markup."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from pypgflow.app import App
from pypgflow.dashboard import create_app
from pypgflow.errors import ConfigurationError
from tests.dashboard.conftest import BEARER, SCRIPT, TOKEN

PAGES = ["/", "/runs", "/failed", "/workflows", "/instances", "/schedules"]
API = [
    "/api/runs",
    "/api/workflows",
    "/api/instances",
    "/api/schedules",
    "/api/failures",
    "/api/overview",
]


def logged_in(client: TestClient) -> str:
    """Log in through the link printed at start; the CSRF token of the pages."""
    response = client.get(f"/login?token={TOKEN}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert TOKEN not in cookie
    page = client.get("/runs")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert match
    return match.group(1)


def test_without_the_token_pages_go_to_login_and_the_api_says_401(
    client: TestClient, stored: dict[str, str]
) -> None:
    for path in [*PAGES, f"/runs/{stored['failed']}"]:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    for path in [*API, f"/api/runs/{stored['failed']}"]:
        response = client.get(path)
        assert response.status_code == 401, path
        assert "token" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    for path in [f"/api/runs/{stored['failed']}/retry", f"/runs/{stored['failed']}/retry"]:
        assert client.post(path, follow_redirects=False).status_code in (401, 303)
    assert client.get("/login").status_code == 200  # the login page itself is open
    assert client.get("/static/style.css").status_code == 200


def test_a_wrong_token_is_refused_everywhere(
    client: TestClient, stored: dict[str, str], app: App
) -> None:
    wrong = {"Authorization": "Bearer not-the-token"}
    for path in [*PAGES, *API]:
        assert client.get(path, headers=wrong).status_code == 401, path
    assert client.post(f"/api/runs/{stored['failed']}/retry", headers=wrong).status_code == 401
    assert client.get("/", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    login = client.get("/login?token=nope", follow_redirects=False)
    assert login.status_code == 401
    assert "not this dashboard" in login.text
    assert "set-cookie" not in login.headers
    client.cookies.set("pypgflow_dashboard", "forged")
    assert client.get("/runs", follow_redirects=False).status_code == 303
    assert app.get_run(stored["failed"]).status.value == "failed"


def test_the_bearer_token_opens_pages_and_actions(
    client: TestClient, stored: dict[str, str]
) -> None:
    for path in [*PAGES, *API]:
        assert client.get(path, headers=BEARER).status_code == 200, path
    # no CSRF token needed: a browser never sends an Authorization header by itself
    response = client.post(f"/api/runs/{stored['failed']}/retry", headers=BEARER)
    assert response.status_code == 200


def test_the_login_form_sets_the_cookie_and_goes_where_it_was_asked(client: TestClient) -> None:
    bad = client.post("/login", data={"token": "wrong", "next": "/failed"})
    assert bad.status_code == 401
    response = client.post(
        "/login", data={"token": TOKEN, "next": "/failed"}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/failed"
    assert client.get("/failed").status_code == 200
    elsewhere = TestClient(client.app).post(
        "/login", data={"token": TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert elsewhere.headers["location"] == "/"


def test_cookie_sessions_need_the_pages_csrf_token_to_act(
    client: TestClient, stored: dict[str, str], app: App
) -> None:
    csrf = logged_in(client)
    failed = stored["failed"]
    for attempt in (
        client.post(f"/runs/{failed}/retry", follow_redirects=False),
        client.post(f"/runs/{failed}/retry", data={"csrf_token": "0" * 64}, follow_redirects=False),
        client.post(f"/api/runs/{failed}/retry"),
        client.post("/runs/retry", data={"run_id": failed}, follow_redirects=False),
    ):
        assert attempt.status_code == 403
        assert "CSRF" in attempt.text
    assert app.get_run(failed).status.value == "failed"
    response = client.post(
        f"/runs/{failed}/retry", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/runs/{failed}"
    assert app.get_run(failed).status.value == "pending"
    header = client.post(f"/api/runs/{stored['pending']}/cancel", headers={"X-CSRF-Token": csrf})
    assert header.status_code == 200
    assert header.json()["status"] == "cancelled"


def test_bulk_actions_from_the_runs_page(
    client: TestClient, stored: dict[str, str], app: App
) -> None:
    csrf = logged_in(client)
    response = client.post(
        "/runs/retry",
        data={
            "csrf_token": csrf,
            "run_id": [stored["failed"], stored["cancelled"]],
            "back": "/runs?status=failed",
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/runs?status=failed"
    assert {app.get_run(stored[k]).status.value for k in ("failed", "cancelled")} == {"pending"}
    empty = client.post("/runs/cancel", data={"csrf_token": csrf})
    assert empty.status_code == 400
    assert "select at least one run" in empty.text


def test_no_action_by_get(client: TestClient, stored: dict[str, str], app: App) -> None:
    run = stored["failed"]
    for path in [
        f"/runs/{run}/retry", f"/runs/{run}/cancel", "/runs/retry", "/runs/cancel", "/failed/retry",
        f"/api/runs/{run}/retry", f"/api/runs/{run}/cancel", "/api/runs/retry", "/api/runs/cancel",
        "/api/failures/retry", "/logout",
    ]:  # fmt: skip
        assert client.get(path, headers=BEARER).status_code == 405, path
    assert app.get_run(run).status.value == "failed"


def test_read_only_hides_and_refuses_every_action(app: App, stored: dict[str, str]) -> None:
    with TestClient(create_app(app, token=TOKEN, read_only=True)) as client:
        run = stored["failed"]
        for path in [f"/runs/{run}", "/runs", "/failed"]:
            page = client.get(path, headers=BEARER)
            assert page.status_code == 200
            assert "read-only" in page.text
            assert 'method="post"' not in page.text, path
        for path in [f"/api/runs/{run}/retry", f"/api/runs/{stored['pending']}/cancel"]:
            refused = client.post(path, headers=BEARER)
            assert refused.status_code == 403
            assert "read-only" in refused.json()["error"]
        assert (
            client.post("/api/runs/retry", json={"ids": [run]}, headers=BEARER).status_code == 403
        )
        assert client.post(f"/runs/{run}/retry", headers=BEARER).status_code == 403
        group = {"workflow": "broken", "step": "explode", "error_type": "ValueError"}
        assert client.post("/failed/retry", data=group, headers=BEARER).status_code == 403
        assert client.post("/api/failures/retry", json=group, headers=BEARER).status_code == 403
    assert app.get_run(run).status.value == "failed"


def test_stored_markup_is_shown_as_text_on_every_page(
    client: TestClient, stored: dict[str, str], app: App
) -> None:
    app.start("greet", {"name": SCRIPT}, queue="q<b>x</b>")
    for path in [
        *PAGES,
        f"/runs/{stored['failed']}",
        f"/runs/{stored['completed']}",
        f"/runs/{stored['completed']}/live",
        "/runs?search=script",
    ]:
        page = client.get(path, headers=BEARER)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
        assert "<b>x</b>" not in page.text, path
    detail = client.get(f"/runs/{stored['completed']}", headers=BEARER).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert (
        client.get("/", headers=BEARER)
        .headers["content-security-policy"]
        .startswith("default-src 'self'")
    )


def test_the_token_must_be_given_or_in_the_environment(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYPGFLOW_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="needs a token"):
        create_app(app)
    monkeypatch.setenv("PYPGFLOW_DASHBOARD_TOKEN", "from-env")
    with TestClient(create_app(app)) as client:
        assert (
            client.get("/api/runs", headers={"Authorization": "Bearer from-env"}).status_code == 200
        )
