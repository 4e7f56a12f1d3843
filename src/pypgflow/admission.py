"""Which fleet-wide limits a claimed task must pass before it runs (see pypgflow.limits).

The worker asks :func:`gates_for` for each task it claims, then the engine to admit those with
gates (``Engine.admit``), all at once: a task admitted runs; a task sent back is queued again by
the engine itself, without its attempt counted, waiting in the database for its gate.
"""

from __future__ import annotations

from collections.abc import Mapping

from pypgflow.engines.base import ClaimedTask
from pypgflow.errors import ConfigurationError
from pypgflow.limits import Gate, GateRequest, RateLimit, key_part, rate_margin
from pypgflow.workflow import Workflow


def gates_for(
    task: ClaimedTask,
    workflow: Workflow | None,
    *,
    queue_limits: Mapping[str, int],
    rate_limits: Mapping[str, RateLimit],
) -> tuple[Gate, ...]:
    """The gates of a claimed task: its queue's limit, its workflow's (whole runs), its step's
    concurrency and rate limits. A key function that raises, or returns something that is not
    JSON, raises (the task then fails)."""
    gates: list[Gate] = []
    capacity = queue_limits.get(task.queue)
    if capacity is not None:
        gates.append(Gate(f"queue:{task.queue}", "task", capacity))
    step = workflow.steps.get(task.step) if workflow is not None else None
    if workflow is not None and workflow.concurrency is not None:
        key = f"run:{workflow.name}"
        if workflow.concurrency_key is not None:
            key += ":" + key_part(workflow.concurrency_key(task.run_input))
        gates.append(Gate(key, "run", workflow.concurrency))
    if step is None:
        return tuple(gates)
    if step.concurrency is not None:
        key = f"step:{task.workflow}:{step.name}"
        if step.concurrency_key is not None:
            key += ":" + key_part(step.concurrency_key(task.run_input))
        gates.append(Gate(key, "task", step.concurrency))
    if step.rate_limit is not None:
        limit = rate_limits.get(step.rate_limit)
        if limit is None:
            raise ConfigurationError(
                f"step {step.name!r} of workflow {task.workflow!r} takes rate limit "
                f"{step.rate_limit!r}, which this app does not declare (app.rate_limit)"
            )
        key = f"rate:{limit.name}"
        if step.rate_limit_key is not None:
            key += ":" + key_part(step.rate_limit_key(task.run_input))
        gates.append(Gate(key, "rate", limit.limit, limit.per))
    return tuple(gates)


def request_of(task: ClaimedTask) -> GateRequest:
    """The admission request of a task whose gates are set."""
    return GateRequest(task.id, task.attempt, task.run_id, task.gates)


def token_stale(task: ClaimedTask, now: float) -> bool:
    """Whether a task's rate tokens were taken too long before its step is called (it waited
    for a slot, claimed ahead): it must be admitted again (see ``limits.RATE_MARGIN``)."""
    return any(
        gate.kind == "rate" and now - task.admitted_at > rate_margin(gate.per)
        for gate in task.gates
    )


def undeclared_rate_limits(
    workflows: Mapping[tuple[str, str], Workflow], rate_limits: Mapping[str, RateLimit]
) -> list[str]:
    """The rate limits the steps of these workflows take that the app does not declare."""
    return sorted(
        {
            f"{step.rate_limit!r} (step {step.name!r} of workflow {flow.name!r})"
            for flow in workflows.values()
            for step in flow.steps.values()
            if step.rate_limit is not None and step.rate_limit not in rate_limits
        }
    )
