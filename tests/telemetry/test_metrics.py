"""Prometheus metrics, on every engine: after known work, the endpoint's counters, histograms
and database-wide gauges say what happened; the gauges read the database once per cache
period; the Grafana dashboard uses only metrics that exist."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pypgflow.app import App
from pypgflow.telemetry import prometheus
from tests.conftest import running_worker
from tests.telemetry.flows import traced

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "pypgflow.json"

pytestmark = pytest.mark.timeout(60)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[set[str], Samples]:
    """The metric families' names and every sample, from the endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return parse(text)


def parse(text: str) -> tuple[set[str], Samples]:
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_endpoint_says_what_the_work_did(make_app: Callable[..., App]) -> None:
    app = make_app(traced)
    server = prometheus.serve(app, 0, "127.0.0.1", cache_seconds=0)
    try:
        runs = app.start_many(traced, [{"n": 1}, {"n": 2, "fail_first": True}, {"n": 3}])
        app.start_many(traced, [{"n": 9}, {"n": 9}], queue="idle")  # nobody works on it
        (lost,) = app.engine.claim_tasks(  # an instance that will never come back
            "default", 1, instance_id="ghost", workflows=["traced"]
        ) or [None]
        assert lost is not None
        with running_worker(app, heartbeat_interval=0.2, stale_after=1.0) as worker:
            assert [run.result(timeout=20) for run in runs] == [2, 4, 6]
            _, during = scrape(server.port)
        names, samples = scrape(server.port)
    finally:
        server.close()

    assert value(samples, "pypgflow_runs_total", workflow="traced", status="started") == 5
    assert value(samples, "pypgflow_runs_total", workflow="traced", status="completed") == 3
    assert value(samples, "pypgflow_runs_total", workflow="traced", status="failed") == 0
    steps = {
        (step, outcome): value(
            samples, "pypgflow_steps_total", workflow="traced", step=step, outcome=outcome
        )
        for step in ("fetch", "store")
        for outcome in ("completed", "retried", "failed")
    }
    # the ghost's fetch was rescued and run again here: 3 fetches completed, one retried
    assert steps == {
        ("fetch", "completed"): 3,
        ("fetch", "retried"): 1,
        ("fetch", "failed"): 0,
        ("store", "completed"): 3,
        ("store", "retried"): 0,
        ("store", "failed"): 0,
    }
    assert (
        value(samples, "pypgflow_step_duration_seconds_count", workflow="traced", step="fetch") == 4
    )
    assert (
        value(samples, "pypgflow_step_duration_seconds_count", workflow="traced", step="store") == 3
    )
    assert (
        value(samples, "pypgflow_run_duration_seconds_count", workflow="traced", status="completed")
        == 3
    )
    assert value(samples, "pypgflow_rescues_total") == 1
    assert value(samples, "pypgflow_claim_batch_size_sum", queue="default") == 7
    assert value(samples, "pypgflow_claim_batch_size_count", queue="default") >= 1

    assert value(samples, "pypgflow_database_up") == 1
    assert value(samples, "pypgflow_queue_depth", queue="idle") == 2
    assert value(samples, "pypgflow_queue_lag_seconds", queue="idle") > 0
    assert ("pypgflow_queue_depth", (("queue", "default"),)) not in samples  # nothing left there
    # while the worker ran it was online; the ghost never registered (not an instance)
    assert value(during, "pypgflow_instances", state="online") == 1
    assert value(samples, "pypgflow_instances", state="online") == 0  # it deregistered
    assert worker.instance_id
    assert {"pypgflow_leader", "pypgflow_step_timeouts"} <= names


def test_gauges_read_the_database_once_per_cache_period(make_app: Callable[..., App]) -> None:
    app = make_app(traced)
    registry = CollectorRegistry()
    metrics = prometheus.register(app, registry, cache_seconds=3600)
    assert metrics.gauges is not None
    assert metrics.gauges.reads == 0  # registering reads nothing
    app.start(traced, {"n": 1})
    first = parse(generate_latest(registry).decode())[1]
    app.start(traced, {"n": 1})
    second = parse(generate_latest(registry).decode())[1]
    assert metrics.gauges.reads == 1
    assert value(first, "pypgflow_queue_depth", queue="default") == 1
    assert value(second, "pypgflow_queue_depth", queue="default") == 1  # the cached read
    metrics.close()
    assert "pypgflow_runs_total" not in generate_latest(registry).decode()
    assert app.events.active is False


def test_without_the_database_gauges_a_scrape_reads_nothing(make_app: Callable[..., App]) -> None:
    app = make_app(traced)
    registry = CollectorRegistry()
    metrics = prometheus.register(app, registry, database=False)
    app.start(traced, {"n": 1})
    names, samples = parse(generate_latest(registry).decode())
    assert value(samples, "pypgflow_runs_total", workflow="traced", status="started") == 1
    assert "pypgflow_queue_depth" not in names
    assert metrics.gauges is None
    metrics.close()


def test_the_dashboard_uses_only_metrics_that_exist(make_app: Callable[..., App]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    assert len(exprs) >= 8
    used = {name for expr in exprs for name in re.findall(r"\bpypgflow_[a-z_]+", expr)}
    app = make_app(traced)
    registry = CollectorRegistry()
    metrics = prometheus.register(app, registry)
    app.start(traced, {"n": 1})
    text = generate_latest(registry).decode()
    metrics.close()
    exposed = set(re.findall(r"^# TYPE (pypgflow_[a-z_]+)", text, re.M))
    series = set(re.findall(r"^(pypgflow_[a-z_]+)", text, re.M)) | exposed
    suffixed = {
        f"{name}{suffix}" for name in exposed for suffix in ("_bucket", "_count", "_sum", "_total")
    }
    assert used <= series | suffixed, used - series - suffixed
