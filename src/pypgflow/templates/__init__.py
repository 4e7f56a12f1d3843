"""Workflow templates: factories of ready-made workflows for common jobs, each returning a
configured :class:`~pypgflow.Workflow` built around the functions you pass (with defaults that
run out of the box, for demos and tests), and a starter module for ``pypgflow new``.

======================  =====================================================================
``llm_request``         receive -> select_model -> call_model (rate-limit-aware) -> publish
``webhook``             delivery with retries and backoff; failed runs are the dead letters
``etl``                 extract -> batches -> transform (map over batches) -> load (fan-in)
``map_reduce``          a map over URLs or files -> reduce
``saga``                actions with compensations, undone in reverse order on a failure
``report``              gather -> render -> deliver, on a cron schedule
======================  =====================================================================

docs/templates.md shows each one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from types import ModuleType

from pypgflow.errors import InvalidArgument
from pypgflow.templates import etl, llm_request, map_reduce, report, saga, webhook
from pypgflow.templates.etl import etl_workflow
from pypgflow.templates.llm_request import llm_request_workflow
from pypgflow.templates.map_reduce import map_reduce_workflow
from pypgflow.templates.report import report_workflow, schedule_report
from pypgflow.templates.saga import Action, saga_workflow
from pypgflow.templates.webhook import dead_letters, redrive, webhook_workflow


@dataclass(frozen=True)
class Template:
    """A template: its name, what it does (one line), and its module (the factory and the
    ``STARTER`` source that ``pypgflow new`` writes)."""

    name: str
    summary: str
    module: ModuleType

    def starter(self, module_name: str) -> str:
        """The starter module's source, for a module named ``module_name``."""
        return string.Template(self.module.STARTER).substitute(module=module_name)

    def example(self, module_name: str) -> str:
        """The JSON input of a first run of the starter module ``module_name``."""
        return string.Template(self.module.EXAMPLE).substitute(module=module_name)


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template("llm_request", "an LLM call with rate-limit-aware retries", llm_request),
        Template("webhook", "webhook delivery with retries, backoff and dead letters", webhook),
        Template("etl", "extract, transform in batches, load", etl),
        Template("map_reduce", "a map over URLs or files, then a reduce", map_reduce),
        Template("saga", "actions with compensations, undone in reverse on failure", saga),
        Template("report", "a report gathered, rendered and delivered on a cron schedule", report),
    )
}


def template(name: str) -> Template:
    """The template of that name, or InvalidArgument listing the names."""
    found = TEMPLATES.get(name)
    if found is None:
        raise InvalidArgument(f"no template named {name!r}: choose one of {', '.join(TEMPLATES)}")
    return found


__all__ = [
    "TEMPLATES",
    "Action",
    "Template",
    "dead_letters",
    "etl_workflow",
    "llm_request_workflow",
    "map_reduce_workflow",
    "redrive",
    "report_workflow",
    "saga_workflow",
    "schedule_report",
    "template",
    "webhook_workflow",
]
