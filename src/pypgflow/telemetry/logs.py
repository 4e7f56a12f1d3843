"""JSON log lines: :class:`JsonFormatter`, one JSON object per record, for log pipelines that
parse them (Loki, Elasticsearch, CloudWatch). ``pypgflow worker --log-format json`` uses it; an
app installs it on its own handler::

    import logging
    from pypgflow.telemetry.logs import JsonFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])

Each line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and where the
record says: ``run_id``, ``workflow``, ``step``, ``attempt``, ``task_index``, ``instance_id``
(pypgflow's records carry them: see :mod:`pypgflow.context`), ``trace_id`` and ``span_id`` of
the current OpenTelemetry span (when ``opentelemetry-api`` is installed and a span is
recording, e.g. a step's under :mod:`pypgflow.telemetry.otel`), ``exception`` (its traceback)
and any other ``extra=`` given to the call that are JSON values.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

#: what every record has: not repeated as extras
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "pypgflow_context",
    "taskName",
}
#: pypgflow's context attributes, in the order a line shows them
CONTEXT_FIELDS = ("run_id", "workflow", "step", "attempt", "task_index", "instance_id", "event")

try:  # the trace ids of the current span, when OpenTelemetry is there
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - without the otel extra
    _trace = None  # type: ignore[assignment]


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if _trace is not None:
            context = _trace.get_current_span().get_span_context()
            if context.is_valid:
                line["trace_id"] = f"{context.trace_id:032x}"
                line["span_id"] = f"{context.span_id:016x}"
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in line and _is_json(value):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def _is_json(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict)
