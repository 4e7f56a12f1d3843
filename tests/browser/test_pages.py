"""The dashboard in a real browser: every page loads and draws, a run is followed from pending to
completed without a reload, a failed run is retried by a click. Each page's screenshot is saved (`make screenshots` puts
them in docs/screenshots/, which the docs show)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from pypgflow.demo import DOCUMENTS, PROMPTS
from tests.browser import flows
from tests.browser.conftest import Served
from tests.conftest import running_worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def wait(served: Served, timeout: float = 20) -> Any:
    return WebDriverWait(served.browser, timeout, poll_frequency=0.1)


def finish(served: Served, runs: list[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(run.status().finished for run in runs):
        assert time.monotonic() < deadline, "runs did not finish"
        time.sleep(0.1)


def test_every_page_loads_and_draws(served: Served) -> None:
    app = served.app
    flows.FAIL.set()
    runs = [app.start("llm_request", {"prompt": p}) for p in PROMPTS]
    runs += [app.start("document_stats", {"text": d}) for d in DOCUMENTS]
    failed = app.start("payment", {"order": 1042})
    with running_worker(app):
        finish(served, [*runs, failed])
        served.open("/instances")
        assert "leader" in served.browser.page_source or "online" in served.browser.page_source
        served.screenshot("instances")
    flows.FAIL.clear()
    app.start("llm_request", {"prompt": "queued for later"}, delay=600)
    checks = [
        ("/", "Overview", "overview"),
        ("/runs", "Runs", "runs"),
        ("/failed", "Failed runs", "failed"),
        ("/workflows", "Workflows", "workflows"),
        ("/schedules", "Schedules", "schedules"),
    ]
    for path, heading, name in checks:
        served.open(path)
        assert served.browser.find_element(By.TAG_NAME, "h1").text.startswith(heading)
        assert not served.browser.find_elements(By.CSS_SELECTOR, "p.alert")
        served.screenshot(name)
    served.open("/workflows")
    assert len(served.browser.find_elements(By.CSS_SELECTOR, "svg.dag g.node")) == 4 + 5 + 2
    served.open(f"/runs/{runs[-1].id}")  # a document_stats run: a map step, a DAG
    nodes = served.browser.find_elements(By.CSS_SELECTOR, "svg.dag g.node.n-completed")
    assert len(nodes) == 5
    assert served.browser.find_elements(By.CSS_SELECTOR, "svg.waterfall rect.seg")
    served.screenshot("run")
    served.open(f"/runs/{runs[0].id}")  # llm_request: call_llm failed once, then succeeded
    assert "RateLimited" in served.browser.page_source
    served.screenshot("run-retried-step")


def test_a_run_is_followed_from_pending_to_completed_without_a_reload(served: Served) -> None:
    app = served.app
    run = app.start("document_stats", {"text": DOCUMENTS[0]})
    served.open(f"/runs/{run.id}")
    live = served.browser.find_element(By.ID, "run-live")
    assert live.get_attribute("data-status") == "pending"
    served.browser.execute_script("window.pypgflowMarker = 'same page';")
    with running_worker(app):
        wait(served, 30).until(
            ec.text_to_be_present_in_element_attribute(
                (By.ID, "run-live"), "data-status", "completed"
            )
        )
    assert served.browser.execute_script("return window.pypgflowMarker") == "same page"
    assert len(served.browser.find_elements(By.CSS_SELECTOR, "svg.dag g.node.n-completed")) == 5
    assert not served.browser.find_elements(By.CSS_SELECTOR, "#run-live[hx-trigger]")


def test_a_failed_run_is_retried_by_a_click(served: Served) -> None:
    app = served.app
    flows.FAIL.set()
    run = app.start("payment", {"order": 7})
    with running_worker(app):
        finish(served, [run])
        assert run.status().value == "failed"
        flows.FAIL.clear()
        served.open(f"/runs/{run.id}")
        assert "card processor unreachable" in served.browser.page_source
        served.screenshot("run-failed")
        served.browser.find_element(By.XPATH, "//button[normalize-space()='Retry']").click()
        wait(served, 30).until(
            ec.text_to_be_present_in_element_attribute(
                (By.ID, "run-live"), "data-status", "completed"
            )
        )
    assert app.get_run(run.id).status.value == "completed"
