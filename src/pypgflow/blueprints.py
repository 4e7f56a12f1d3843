"""A workflow's blueprint: its stored definition, the graph and step options without the code.

Workers and apps store the blueprint of each workflow version they know (``workflow_definitions``),
so that a process that has not imported a workflow can still start it (the run is built from the
blueprint, as from the workflow) and the dashboard and CLI can draw its graph. A blueprint is
JSON: names, dependencies, kinds and options; never code.
"""

from __future__ import annotations

from typing import Any

from pypgflow.backoff import Backoff
from pypgflow.errors import NotSupported, WorkflowDefinitionError
from pypgflow.workflow import Workflow, resolve_options

#: the blueprint format this module writes (and the newest it reads)
FORMAT = 1


def blueprint(flow: Workflow) -> dict[str, Any]:
    """The stored definition of ``flow`` (its options resolved, as its runs use them)."""
    flow.validate()
    steps = []
    for name in flow.topological_order():
        step = flow.steps[name]
        options = resolve_options(flow, step)
        steps.append(
            {
                "name": name,
                "depends_on": list(step.depends_on),
                "is_map": step.is_map,
                "map_over": step.map_over,
                "conditional": step.when is not None,
                "start_delay": step.start_delay,
                "signal": step.signal,
                "signal_timeout": step.signal_timeout,
                "subflow": None
                if step.child is None
                else f"{step.child.name}@{step.child.version}",
                "max_attempts": options.max_attempts,
                "timeout": options.timeout,
                "backoff": {
                    "base": options.backoff.base,
                    "factor": options.backoff.factor,
                    "max": options.backoff.max,
                    "jitter": options.backoff.jitter,
                },
            }
        )
    return {"format": FORMAT, "name": flow.name, "version": flow.version, "steps": steps}


def from_blueprint(data: Any) -> Workflow:
    """A code-less workflow from a stored definition: it starts runs as the workflow would (the
    same steps, dependencies and options, the same version), but its steps cannot be called.
    WorkflowDefinitionError if ``data`` is not a blueprint."""
    try:
        if data["format"] > FORMAT:
            raise WorkflowDefinitionError(
                f"the stored definition of workflow {data['name']!r} is of a newer format "
                f"({data['format']}) than this pypgflow reads ({FORMAT}): upgrade pypgflow"
            )
        flow = Workflow(data["name"], version=data["version"])
        for step in data["steps"]:
            backoff = Backoff(**step["backoff"])
            options = {
                "name": step["name"],
                "max_attempts": step["max_attempts"],
                "timeout": step["timeout"],
                "backoff": backoff,
            }
            stub = _stub(data["name"], step["name"])
            if step.get("signal") is not None:
                flow.wait_for(
                    step["name"],
                    signal=step["signal"],
                    depends_on=step["depends_on"],
                    timeout=step.get("signal_timeout"),
                )
            elif step["is_map"]:
                flow.map(over=step["map_over"], **options)(stub)
            else:
                flow.step(
                    depends_on=step["depends_on"], start_delay=step.get("start_delay"), **options
                )(stub)
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkflowDefinitionError(f"not a stored workflow definition: {exc!r}") from exc
    return flow.validate()


def _stub(workflow: str, step: str) -> Any:
    def not_here() -> None:
        raise NotSupported(
            f"step {step!r} of workflow {workflow!r} has no code in this process (its workflow "
            "is known from its stored definition only)"
        )

    return not_here
