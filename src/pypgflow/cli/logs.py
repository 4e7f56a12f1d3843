"""Logging for the commands that run work (``worker``, ``demo``): records to stderr, each tagged
with the run and step it comes from; as text, or one JSON object per line (``--log-format
json``: :class:`pypgflow.telemetry.logs.JsonFormatter`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(pypgflow_context)s: %(message)s"


class _LogFormatter(logging.Formatter):
    """Adds `` [run=... step=name#attempt]`` to records that carry pypgflow's run context."""

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        run_id = getattr(record, "run_id", None)
        if run_id:
            parts.append(f"run={run_id}")
        step = getattr(record, "step", None)
        if step:
            task_index = getattr(record, "task_index", None)
            attempt = getattr(record, "attempt", None)
            where = step if task_index is None else f"{step}[{task_index}]"
            parts.append(f"step={where}" + (f"#{attempt}" if attempt else ""))
        record.pypgflow_context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


#: the choices of ``--log-format``
LOG_FORMATS = ("text", "json")


def configure_logging(level: str, log_format: str = "text") -> Callable[[], None]:
    """Log to stderr at ``level`` (unless the app configured logging itself), as text or JSON
    lines; returns an undo."""
    root = logging.getLogger()
    previous_level = root.level
    handler: logging.Handler | None = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_formatter(log_format))
        root.addHandler(handler)
    root.setLevel(level.upper())

    def undo() -> None:
        if handler is not None:
            root.removeHandler(handler)
        root.setLevel(previous_level)

    return undo


def _formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from pypgflow.telemetry.logs import JsonFormatter

        return JsonFormatter()
    return _LogFormatter(LOG_FORMAT)
