"""A saga: actions in order, each with a compensation; when an action fails for good, the
compensations of the actions that completed run in reverse order, then the run fails with
:class:`~pypgflow.errors.SagaFailed` naming the action that failed.

Every action and every compensation is a durable step of its own, so the saga carries on
from where it was after a crash, and the dashboard shows where it is. The graph, for actions
``a``, ``b``, ``c``::

    a -> b -> c -> verdict -> undo_c -> undo_b -> undo_a -> finish

- Action ``k`` runs only if action ``k - 1`` succeeded (a ``when=`` condition: otherwise it is
  ``skipped``). It gets ``action.run(input, results)`` (the results of the earlier actions, by
  name) and is retried with its own attempts and backoff; it **fails for good** when it raises
  a :class:`~pypgflow.NonRetryable` or its last attempt raises. Its step then completes with
  the failure as its output (``{"ok": false, "failed": {...}}``), and the rest follow from it.
- ``verdict`` reads every action's outcome: the failed action (if any) and the results of the
  completed ones.
- ``undo_x`` runs ``action.compensate(input, result)`` (``result``: what ``x`` returned) only
  if an action failed and ``x`` had completed; ``skipped`` otherwise. Compensations run one at
  a time, the last completed action first, each retried with ``compensation_attempts``.
- ``finish`` returns the results by action name, or raises ``SagaFailed``.

Guarantees and limits, as in any saga: an action that fails leaves nothing to undo (make it
atomic, or clean up before raising), since only completed actions are compensated; steps run
at least once, so actions and compensations must be safe to repeat (pass an idempotency key
derived from the input). A compensation that fails for good fails the run at its step, with
the ones after it not run: fix the cause and ``app.retry(run_id)`` resumes at it. A failure
outside the action's code on its last attempt (the step's timeout, a lost worker) fails the run
at that action without compensating: ``app.retry`` resumes the action. Cancelling a run does
not compensate. With :func:`~pypgflow.execute`, pass ``retry="step"`` (durable runs always
retry step by step).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.errors import InvalidArgument, NonRetryable, SagaFailed
from pypgflow.workflow import Workflow

Outcome = dict[str, Any]


@dataclass(frozen=True)
class Action:
    """One step of a saga: ``run(input, results)`` does it and returns a JSON value;
    ``compensate(input, result)`` undoes it (None: nothing to undo). ``max_attempts`` and
    ``timeout`` override the saga's for this action."""

    name: str
    run: Callable[[Any, dict[str, Any]], Any]
    compensate: Callable[[Any, Any], Any] | None = None
    max_attempts: int | None = None
    timeout: float | None = None


class DemoFailure(NonRetryable):
    """What the demo's actions raise for the action named by the input's ``"fail_at"``."""


def _demo_action(name: str, reference: str) -> Callable[[Any, dict[str, Any]], Any]:
    def run(input: Any, results: dict[str, Any]) -> Any:
        if isinstance(input, dict) and input.get("fail_at") == name:
            raise DemoFailure(f"{name} refused (the input asked it to fail)")
        return f"{reference}-{len(results) + 1}"

    return run


def _demo_undo(input: Any, result: Any) -> Any:
    return f"released {result}"


#: the demo saga: a trip booked in three actions; ``{"fail_at": "charge_card"}`` makes the
#: last one fail, and the hotel then the flight are released
DEMO_ACTIONS = (
    Action("reserve_flight", _demo_action("reserve_flight", "FL"), _demo_undo),
    Action("reserve_hotel", _demo_action("reserve_hotel", "HT"), _demo_undo),
    Action("charge_card", _demo_action("charge_card", "CH")),
)


def saga_workflow(
    actions: Sequence[Action] = DEMO_ACTIONS,
    *,
    name: str = "saga",
    max_attempts: int = 3,
    backoff: Backoff | None = None,
    timeout: float = 60.0,
    compensation_attempts: int = 10,
    compensation_backoff: Backoff | None = None,
) -> Workflow:
    """The saga of ``actions`` as a workflow named ``name`` (see the module's docstring); its
    output is each action's result by name. Action names must be Python identifiers, unique,
    and not ``verdict``, ``finish``, ``input`` or ``ctx``."""
    actions = tuple(actions)
    _check(actions)
    flow = Workflow(name, timeout=timeout)
    previous: str | None = None
    for action in actions:
        _add_action(flow, action, previous, action.max_attempts or max_attempts, backoff)
        previous = action.name
    names = [a.name for a in actions]
    flow.step(name="verdict", depends_on=names, max_attempts=1)(_verdict(names))
    last = "verdict"
    for action in reversed(actions):
        if action.compensate is None:
            continue
        flow.step(
            name=f"undo_{action.name}",
            depends_on=["verdict"] + ([] if last == "verdict" else [last]),
            when=_undo_needed(action.name),
            max_attempts=compensation_attempts,
            backoff=compensation_backoff or backoff,
        )(_undo(action))
        last = f"undo_{action.name}"
    flow.step(
        name="finish", depends_on=["verdict"] + ([] if last == "verdict" else [last]),
        max_attempts=1,
    )(_finish(name, actions))  # fmt: skip
    return flow.validate()


def _check(actions: tuple[Action, ...]) -> None:
    if not actions:
        raise InvalidArgument("saga_workflow: a saga needs at least one Action")
    seen: set[str] = set()
    for action in actions:
        if not isinstance(action, Action):
            raise InvalidArgument(f"saga_workflow: takes Actions, got {action!r}")
        if not action.name.isidentifier() or action.name in {"verdict", "finish", "input", "ctx"}:
            raise InvalidArgument(
                f"saga_workflow: action name {action.name!r} must be a Python identifier other "
                "than verdict, finish, input and ctx"
            )
        if action.name in seen:
            raise InvalidArgument(f"saga_workflow: two actions are named {action.name!r}")
        seen.add(action.name)
        for label, fn in (("run", action.run), ("compensate", action.compensate)):
            if fn is not None and (not callable(fn) or inspect.iscoroutinefunction(fn)):
                raise InvalidArgument(
                    f"saga_workflow: action {action.name!r}: {label} must be a plain function"
                )


def _add_action(
    flow: Workflow, action: Action, previous: str | None, attempts: int, backoff: Backoff | None
) -> None:
    def attempt(input: Any, results: dict[str, Any], ctx: StepContext) -> Outcome:
        try:
            result = action.run(input, dict(results))
        except Exception as exc:
            if not isinstance(exc, NonRetryable) and ctx.attempt < attempts:
                raise  # retried: not failed for good yet
            ctx.logger.warning("action %s failed for good: %s", action.name, exc)
            failed = {"action": action.name, "type": type(exc).__name__, "message": str(exc)}
            return {"ok": False, "results": results, "failed": failed}
        return {"ok": True, "results": {**results, action.name: result}}

    options: dict[str, Any] = {
        "name": action.name, "max_attempts": attempts, "backoff": backoff,
        "timeout": action.timeout,
    }  # fmt: skip
    if previous is None:

        @flow.step(depends_on=[], **options)
        def first(input: Any, ctx: StepContext) -> Outcome:
            return attempt(input, {}, ctx)

        return

    @flow.step(depends_on=[previous], when=_succeeded, **options)
    def later(before: Outcome, input: Any, ctx: StepContext) -> Outcome:
        return attempt(input, before["results"], ctx)


def _succeeded(before: Outcome | None) -> bool:
    """An action runs only if the one before it succeeded (None: it was skipped)."""
    return bool(before and before["ok"])


def _verdict(names: list[str]) -> Callable[..., Outcome]:
    """The step that reads every action's outcome. It takes each action's output by the
    action's name, so its signature is made from the names (checked to be identifiers)."""

    def verdict(**outcomes: Outcome | None) -> Outcome:
        results: dict[str, Any] = {}
        for name in names:
            outcome = outcomes[name]
            if outcome is None:  # skipped: an earlier action failed
                continue
            results = outcome["results"]
            if not outcome["ok"]:
                return {"failed": outcome["failed"], "results": results}
        return {"failed": None, "results": results}

    verdict.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in names]
    )
    return verdict


def _undo_needed(name: str) -> Callable[[Outcome], bool]:
    def needed(verdict: Outcome) -> bool:
        return verdict["failed"] is not None and name in verdict["results"]

    return needed


def _undo(action: Action) -> Callable[..., Any]:
    compensate = action.compensate
    assert compensate is not None  # noqa: S101  only actions with a compensation get an undo step

    def undo(verdict: Outcome, input: Any, ctx: StepContext) -> Any:
        ctx.logger.info("compensating %s (attempt %d)", action.name, ctx.attempt)
        return compensate(input, verdict["results"][action.name])

    return undo


def _finish(saga: str, actions: tuple[Action, ...]) -> Callable[..., Any]:
    def finish(verdict: Outcome) -> Any:
        failed = verdict["failed"]
        if failed is None:
            return verdict["results"]
        undone = [
            a.name for a in reversed(actions) if a.compensate and a.name in verdict["results"]
        ]
        raise SagaFailed(
            f"saga {saga!r} failed at action {failed['action']!r}: {failed['type']}: "
            f"{failed['message']}; compensated: {', '.join(undone) or 'nothing'}",
            action=failed["action"],
            compensated=undone,
        )

    return finish


#: the input of the starter's first run (``$module``: the starter module's name)
EXAMPLE = '{"trip": "Lisbon"}'

STARTER = '''\
"""A saga, from `pypgflow new saga`: actions in order, each with a compensation; when one
fails for good, the completed ones are undone in reverse order and the run fails naming it.

    pypgflow migrate --app $module:app
    pypgflow worker $module:app
    pypgflow start $module:app saga --input '{"trip": "Lisbon"}' --wait
    pypgflow start $module:app saga --input '{"trip": "Lisbon", "fail_at": "charge_card"}' --wait
"""

from typing import Any

from pypgflow import App, NonRetryable
from pypgflow.templates import Action, saga_workflow

# PYPGFLOW_DATABASE_URL if set, else the SQLite file pypgflow.db in the working directory.
app = App()


class Refused(NonRetryable):  # fails the action at once: no retry would change it
    pass


def reserve_flight(input: dict[str, Any], results: dict[str, Any]) -> str:
    return f"flight to {input['trip']}"


def cancel_flight(input: dict[str, Any], flight: str) -> str:
    return f"cancelled {flight}"


def reserve_hotel(input: dict[str, Any], results: dict[str, Any]) -> str:
    return f"hotel in {input['trip']}"


def cancel_hotel(input: dict[str, Any], hotel: str) -> str:
    return f"cancelled {hotel}"


def charge_card(input: dict[str, Any], results: dict[str, Any]) -> str:
    if input.get("fail_at") == "charge_card":
        raise Refused("card declined")
    return f"charged for {results['reserve_flight']} and {results['reserve_hotel']}"


flow = app.register(
    saga_workflow(
        [
            Action("reserve_flight", reserve_flight, cancel_flight),
            Action("reserve_hotel", reserve_hotel, cancel_hotel),
            Action("charge_card", charge_card),  # the last action: nothing after it to undo
        ]
    )
)
'''
