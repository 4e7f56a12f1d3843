"""What a running step knows about itself: :class:`StepContext`, and the logger that carries it.

Every log record pypgflow writes about a run carries ``run_id``, ``workflow``, ``step``,
``attempt``, ``task_index`` and ``event`` as record attributes (``None`` where one does not apply,
e.g. ``step`` on a workflow-level record), so a formatter such as
``"%(run_id)s %(step)s#%(attempt)s %(message)s"`` or a JSON log handler can show them.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("pypgflow")
# A library never prints: without this, records of WARNING and above would reach logging's
# "last resort" handler (stderr) in a program that has not configured logging.
logger.addHandler(logging.NullHandler())

#: The attributes every pypgflow record about a run carries (None where they do not apply).
RECORD_CONTEXT = ("run_id", "workflow", "step", "attempt", "task_index", "event")


class ContextLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that adds its context to each record, keeping the caller's own extras."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def context_logger(name: str = "pypgflow", **context: Any) -> ContextLogger:
    """A :class:`ContextLogger` whose records carry every attribute of :data:`RECORD_CONTEXT`."""
    return ContextLogger(logging.getLogger(name), {**dict.fromkeys(RECORD_CONTEXT), **context})


@dataclass
class StepContext:
    """Passed to a step that takes a ``ctx`` parameter.

    ``attempt`` counts from 1. ``task_index`` is the element's position for a map step, else None.
    ``cancelled`` turns true when the run is cancelled while the step runs, or when the step's
    attempt is abandoned (its timeout passed, or another branch failed): long sync steps should
    check it and return early, since a thread cannot be stopped (async steps are cancelled for you).
    """

    run_id: str
    workflow: str
    step: str
    attempt: int
    task_index: int | None = None
    instance_id: str | None = None
    #: set by the worker's or the executor's thread, read by the step's (a bool: its writes and
    #: reads are atomic, and a step polls it)
    _cancelled: bool = field(default=False, repr=False)
    _logger: ContextLogger | None = field(default=None, repr=False)

    @property
    def logger(self) -> ContextLogger:
        """A logger (``pypgflow.step``) whose records carry this run, step and attempt."""
        if self._logger is None:
            self._logger = context_logger(
                "pypgflow.step",
                run_id=self.run_id,
                workflow=self.workflow,
                step=self.step,
                attempt=self.attempt,
                task_index=self.task_index,
                instance_id=self.instance_id,
            )
        return self._logger

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Mark the step as cancelled (called by the worker, not by step code)."""
        self._cancelled = True

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to a process-isolated step: the event and the logger stay behind.
        return (
            StepContext,
            (
                self.run_id,
                self.workflow,
                self.step,
                self.attempt,
                self.task_index,
                self.instance_id,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "step": self.step,
            "attempt": self.attempt,
            "task_index": self.task_index,
            "instance_id": self.instance_id,
        }
