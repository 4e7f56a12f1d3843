"""Prometheus metrics of an app and its workers, built on its lifecycle events
(:mod:`pypgflow.events`). Needs ``prometheus-client`` (``pip install pypgflow[prometheus]``).

``register(app, registry)`` puts the collectors in a registry of yours (the default one unless
told); ``serve(app, port)`` serves them at ``http://HOST:PORT/metrics`` from a registry of
their own (what ``pypgflow worker --metrics-port`` does).

Two kinds of metric:

- **This process's counters**, from its events: runs it started or finished, step attempts it
  ran, rescues it made, claims. Each process counts what it did (sum them across instances).
- **Database-wide gauges**, the same from every instance: queue depth and lag, instances by
  state. They are read at scrape time, at most once per ``cache_seconds`` (one round trip of
  two bounded statements: :meth:`~pypgflow.engines.base.Engine.fleet_gauges`), so that
  scraping many instances often costs the database little. A scrape that cannot reach the
  database shows them absent, and ``pypgflow_database_up 0``.

Metric names are fixed (docs/telemetry.md lists them with their labels; its Grafana dashboard
uses them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from pypgflow.definitions import Definitions
from pypgflow.errors import PypgflowError
from pypgflow.events import ClaimBatch, Leadership, RunEvent, StepEvent
from pypgflow.insight import FleetGauges

logger = logging.getLogger("pypgflow.telemetry")

#: seconds a step attempt may take, as the duration histogram's buckets
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: seconds from a run's start to its finish
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: tasks per claim
CLAIM_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
#: how long database-wide gauges are reused between scrapes, by default
DEFAULT_CACHE_SECONDS = 5.0

_STEP_OUTCOMES = {
    "step_completed": "completed",
    "step_retried": "retried",
    "step_failed": "failed",
    "step_cancelled": "cancelled",
}
_RUN_STATUSES = {
    "run_started": "started",
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}


class Metrics:
    """The collectors of one app in one registry; :meth:`close` takes them out again."""

    def __init__(
        self,
        app: Definitions,
        registry: CollectorRegistry = REGISTRY,
        *,
        database: bool = True,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        self.registry = registry
        self.runs = Counter(
            "pypgflow_runs",
            "Runs this process started or finished, by workflow and status (started, "
            "completed, failed, cancelled).",
            ["workflow", "status"],
            registry=None,
        )
        self.run_duration = Histogram(
            "pypgflow_run_duration_seconds",
            "Seconds from a run's start to its finish, for the runs this process finished.",
            ["workflow", "status"],
            buckets=RUN_BUCKETS,
            registry=None,
        )
        self.steps = Counter(
            "pypgflow_steps",
            "Step attempts this worker ran, by outcome (completed, retried, failed, cancelled).",
            ["workflow", "step", "outcome"],
            registry=None,
        )
        self.step_timeouts = Counter(
            "pypgflow_step_timeouts",
            "Step attempts that ran past their timeout (also counted as retried or failed).",
            ["workflow", "step"],
            registry=None,
        )
        self.step_duration = Histogram(
            "pypgflow_step_duration_seconds",
            "Seconds a step attempt ran, whatever its outcome.",
            ["workflow", "step"],
            buckets=STEP_BUCKETS,
            registry=None,
        )
        self.rescues = Counter(
            "pypgflow_rescues",
            "Attempts of lost instances this worker rescued (queued again or failed for good).",
            registry=None,
        )
        self.claim_batch = Histogram(
            "pypgflow_claim_batch_size",
            "Tasks taken per claim that found work.",
            ["queue"],
            buckets=CLAIM_BUCKETS,
            registry=None,
        )
        self.leader = Gauge(
            "pypgflow_leader", "1 while this instance holds the leader lease.", registry=None
        )
        self._collectors: list[Collector] = [
            self.runs,
            self.run_duration,
            self.steps,
            self.step_timeouts,
            self.step_duration,
            self.rescues,
            self.claim_batch,
            self.leader,
        ]
        #: the database-wide gauges (None with ``database=False``)
        self.gauges = DatabaseGauges(app, cache_seconds=cache_seconds) if database else None
        if self.gauges is not None:
            self._collectors.append(self.gauges)
        for collector in self._collectors:
            registry.register(collector)
        #: labelled children by label values: ``labels()`` costs a lock and a lookup per event
        self._children: dict[tuple[Any, ...], Any] = {}
        events = app.events
        self._unsubscribe: list[Callable[[], bool]] = [
            *(events.on(name, self._run) for name in _RUN_STATUSES),
            *(events.on(name, self._step) for name in _STEP_OUTCOMES),
            events.on("step_timed_out", self._timed_out),
            events.on("step_rescued", self._rescued),
            events.on("claim_batch", self._claimed),
            events.on("leadership_gained", self._leadership),
            events.on("leadership_lost", self._leadership),
        ]

    def close(self) -> None:
        """Unsubscribe and unregister the collectors."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        for collector in self._collectors:
            self.registry.unregister(collector)
        self._collectors = []

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _run(self, event: RunEvent) -> None:
        status = _RUN_STATUSES[event.name]
        workflow = event.workflow or ""
        self._child(self.runs, workflow, status).inc()
        if status != "started" and event.duration is not None:
            self._child(self.run_duration, workflow, status).observe(event.duration)

    def _step(self, event: StepEvent) -> None:
        self._child(self.steps, event.workflow, event.step, _STEP_OUTCOMES[event.name]).inc()
        if event.duration is not None and event.name != "step_cancelled":
            self._child(self.step_duration, event.workflow, event.step).observe(event.duration)

    def _timed_out(self, event: StepEvent) -> None:
        self._child(self.step_timeouts, event.workflow, event.step).inc()

    def _rescued(self, event: StepEvent) -> None:
        self.rescues.inc()

    def _claimed(self, event: ClaimBatch) -> None:
        self._child(self.claim_batch, event.queue).observe(event.claimed)

    def _leadership(self, event: Leadership) -> None:
        self.leader.set(1 if event.name == "leadership_gained" else 0)


class DatabaseGauges(Collector):
    """Queue depth and lag, instances by state: read from the database at scrape time, at most
    once per ``cache_seconds`` (concurrent scrapes share one read)."""

    def __init__(self, app: Definitions, *, cache_seconds: float = DEFAULT_CACHE_SECONDS) -> None:
        self.engine = app.engine
        self.stale_after = app.stale_after
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._gauges: FleetGauges | None = None
        #: how many times the database was read (the cache's effect, for tests and operators)
        self.reads = 0

    def describe(self) -> list[Metric]:
        """The families, without reading the database (the registry asks at registration)."""
        return [family for family in self._families()]

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._current())

    def _current(self) -> FleetGauges | None:
        with self._lock:
            if time.monotonic() - self._read_at >= self.cache_seconds:
                self._read_at = time.monotonic()
                self.reads += 1
                try:
                    self._gauges = self.engine.fleet_gauges(stale_after=self.stale_after)
                except PypgflowError as exc:
                    logger.warning("metrics: cannot read the queues and instances: %s", exc)
                    self._gauges = None
            return self._gauges

    def _families(self, gauges: FleetGauges | None = None) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "pypgflow_database_up", "1 if the last read of the database-wide gauges succeeded."
        )
        depth = GaugeMetricFamily(
            "pypgflow_queue_depth", "Tasks queued and due in each queue.", labels=["queue"]
        )
        delayed = GaugeMetricFamily(
            "pypgflow_queue_delayed",
            "Tasks queued for later in each queue (a delay or a retry's backoff).",
            labels=["queue"],
        )
        running = GaugeMetricFamily(
            "pypgflow_queue_running", "Tasks running in each queue.", labels=["queue"]
        )
        lag = GaugeMetricFamily(
            "pypgflow_queue_lag_seconds",
            "How long the oldest due task of each queue has waited (0 when none waits).",
            labels=["queue"],
        )
        instances = GaugeMetricFamily(
            "pypgflow_instances", "Registered worker instances, by state.", labels=["state"]
        )
        up.add_metric([], 0 if gauges is None else 1)
        if gauges is not None:
            for queue in gauges.queues:
                depth.add_metric([queue.queue], queue.due)
                delayed.add_metric([queue.queue], queue.delayed)
                running.add_metric([queue.queue], queue.running)
                lag.add_metric([queue.queue], queue.lag or 0.0)
            for state, count in sorted(gauges.instances.items()):
                instances.add_metric([state], count)
        yield from (up, depth, delayed, running, lag, instances)


def register(
    app: Definitions,
    registry: CollectorRegistry = REGISTRY,
    *,
    database: bool = True,
    cache_seconds: float = DEFAULT_CACHE_SECONDS,
) -> Metrics:
    """Count ``app``'s events in ``registry``'s collectors, with the database-wide gauges unless
    ``database=False`` (e.g. in a web process that only starts runs, whose workers report
    them)."""
    return Metrics(app, registry, database=database, cache_seconds=cache_seconds)


class MetricsServer:
    """``app``'s metrics served over HTTP at ``/metrics`` from a registry of their own."""

    def __init__(
        self,
        app: Definitions,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104  scraped from elsewhere
        **options: Any,
    ) -> None:
        self.registry = CollectorRegistry()
        self.metrics = register(app, self.registry, **options)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose, for port 0)."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving and unsubscribe."""
        self._server.shutdown()
        self._server.server_close()
        self.metrics.close()


def serve(
    app: Definitions,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104  scraped from elsewhere
    **options: Any,
) -> MetricsServer:
    """Serve ``app``'s metrics at ``http://HOST:PORT/metrics`` (every interface by default), on a
    thread of their own; ``options`` are :func:`register`'s."""
    return MetricsServer(app, port, host, **options)
