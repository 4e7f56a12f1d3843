"""Logging for the commands that run work (``worker``): records to stderr, each tagged with the
run and step it comes from."""

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


def configure_logging(level: str) -> Callable[[], None]:
    """Log to stderr at ``level`` (unless the app configured logging itself); returns an undo."""
    root = logging.getLogger()
    previous_level = root.level
    handler: logging.Handler | None = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LogFormatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())

    def undo() -> None:
        if handler is not None:
            root.removeHandler(handler)
        root.setLevel(previous_level)

    return undo
