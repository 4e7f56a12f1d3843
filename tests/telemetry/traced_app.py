"""The app of a traced worker process (``pypgflow worker tests.telemetry.traced_app:app``): its
database from PYPGFLOW_DATABASE_URL, every span it ends written as a JSON line to the file
PYPGFLOW_TEST_SPANS names."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pypgflow.app import App
from pypgflow.telemetry import otel
from tests.telemetry.flows import traced


class FileExporter(SpanExporter):
    """Each span as a line of JSON: names, ids in hex, parent, attributes, status."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                context = span.get_span_context()
                assert context is not None
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_id": None
                            if span.parent is None
                            else f"{span.parent.span_id:016x}",
                            "attributes": dict(span.attributes or {}),
                            "status": span.status.status_code.name,
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["PYPGFLOW_TEST_SPANS"])))
trace.set_tracer_provider(provider)

app = App(workflows=[traced])
otel.instrument(app)
