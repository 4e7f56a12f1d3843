"""Telemetry turned on for a benchmark's App, as an application would: an OpenTelemetry SDK
tracer provider whose spans go through a batch processor to an exporter that drops them (the
cost of making and handing on every span, without a collector's), and the Prometheus
collectors in a registry of their own (counted at every event; the database-wide gauges are
read only when scraped, and nothing scrapes here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from pypgflow.app import App
from pypgflow.telemetry import otel, prometheus


class DroppingExporter(SpanExporter):
    """Counts the spans it is handed, and drops them."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def turn_on(app: App) -> Callable[[], int]:
    """Trace and measure ``app``; returns the function that turns it off again and says how
    many spans were exported."""
    exporter = DroppingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing = otel.instrument(app, tracer_provider=provider)
    metrics = prometheus.register(app, CollectorRegistry())

    def turn_off() -> int:
        tracing.close()
        metrics.close()
        provider.shutdown()  # exports what is left
        return exporter.spans

    return turn_off
