"""How step parameters are bound: by dependency name, `input`, `ctx`, or the single obvious value."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest

from pypgflow import StepContext, Workflow, WorkflowDefinitionError, execute
from pypgflow.workflow import ArgSource


def test_single_dependency_binds_to_a_parameter_of_any_name() -> None:
    flow = Workflow("any-name")

    @flow.step
    def first(input: int) -> int:
        return input + 1

    @flow.step
    def second(whatever_it_is_called: int) -> int:
        return whatever_it_is_called * 10

    assert flow.steps["second"].params[0].source is ArgSource.DEPENDENCY
    assert flow.steps["second"].params[0].dependency == "first"
    assert execute(flow, 1) == 20


def test_root_step_single_parameter_gets_the_workflow_input() -> None:
    flow = Workflow("root-input")

    @flow.step
    def only(payload: dict[str, int]) -> int:
        return payload["x"]

    assert flow.steps["only"].params[0].source is ArgSource.INPUT
    assert execute(flow, {"x": 7}) == 7


def test_input_parameter_receives_the_workflow_input_anywhere() -> None:
    flow = Workflow("input-anywhere")

    @flow.step
    def a(input: int) -> int:
        return input + 1

    @flow.step
    def b(a: int, input: int) -> tuple[int, int]:
        return (a, input)

    assert execute(flow, 5) == (6, 5)


def test_dependencies_bound_by_name_in_a_dag() -> None:
    flow = Workflow("by-name")

    @flow.step(depends_on=[])
    def left(input: int) -> str:
        return f"L{input}"

    @flow.step(depends_on=[])
    def right(input: int) -> str:
        return f"R{input}"

    @flow.step(depends_on=[left, right])
    def join(right: str, left: str, input: int) -> str:  # order of parameters does not matter
        return f"{left}+{right}@{input}"

    assert execute(flow, 3) == "L3+R3@3"


def test_ctx_receives_a_step_context() -> None:
    flow = Workflow("with-ctx")
    seen: list[StepContext] = []

    @flow.step
    def first(input: int, ctx: StepContext) -> int:
        seen.append(ctx)
        return input

    @flow.step
    def second(value: int, ctx: StepContext) -> int:
        seen.append(ctx)
        return value + 1

    assert execute(flow, 1) == 2
    first_ctx, second_ctx = seen
    assert isinstance(first_ctx, StepContext)
    assert first_ctx.workflow == "with-ctx"
    assert (first_ctx.step, second_ctx.step) == ("first", "second")
    assert first_ctx.attempt == second_ctx.attempt == 1
    assert first_ctx.task_index is None
    assert first_ctx.run_id == second_ctx.run_id
    assert len(first_ctx.run_id) == 32
    assert isinstance(first_ctx.logger, logging.LoggerAdapter)
    assert first_ctx.logger.extra is not None
    assert first_ctx.logger.extra["step"] == "first"
    assert not first_ctx.cancelled
    assert first_ctx.to_dict() == {
        "run_id": first_ctx.run_id,
        "workflow": "with-ctx",
        "step": "first",
        "attempt": 1,
        "task_index": None,
        "instance_id": None,
    }


def test_ctx_only_step_after_another_step() -> None:
    flow = Workflow("ctx-only")
    flow.step(name="a")(lambda input: input)

    @flow.step
    def b(ctx: StepContext) -> str:
        return ctx.step

    assert execute(flow, 1) == "b"


def test_step_without_parameters() -> None:
    flow = Workflow("no-params")
    flow.step(name="a")(lambda input: input)

    @flow.step
    def constant() -> str:
        return "fixed"

    assert execute(flow, 1) == "fixed"


def test_keyword_only_and_positional_only_parameters() -> None:
    flow = Workflow("kinds")

    @flow.step(depends_on=[])
    def a(input: int, /) -> int:
        return input + 1

    @flow.step(depends_on=[])
    def b(*, input: int) -> int:
        return input + 2

    @flow.step(depends_on=[a, b])
    def c(a: int, /, *, b: int) -> int:
        return a * 100 + b

    assert flow.steps["a"].params[0].positional_only
    assert not flow.steps["b"].params[0].positional_only
    assert execute(flow, 0) == 102


def test_parameters_with_defaults_keep_them() -> None:
    flow = Workflow("defaults")

    @flow.step
    def a(input: int, scale: int = 3) -> int:
        return input * scale

    @flow.step
    def b(value: int, suffix: str = "!", ctx: Any = None) -> str:
        return f"{value}{suffix}"

    assert [p.name for p in flow.steps["a"].params] == ["input"]
    assert execute(flow, 2) == "6!"


def test_single_free_parameter_with_a_default_takes_the_obvious_value() -> None:
    flow = Workflow("default-taken")
    flow.step(name="a")(lambda input: input + 1)

    @flow.step
    def b(value: int = -1) -> int:
        return value

    assert execute(flow, 1) == 2


def test_positional_only_default_before_a_bound_parameter_cannot_be_bound() -> None:
    flow = Workflow("posonly")
    with pytest.raises(WorkflowDefinitionError, match=r"'scale' cannot be bound.*positional-only"):

        @flow.step
        def a(scale: int = 2, input: int = 0, /) -> int:
            return input * scale


@pytest.mark.parametrize(
    ("depends_on", "message"),
    [
        (None, r"parameter 'x', 'y' cannot be bound.*its dependencies \(other\)"),
        ([], r"parameter 'x', 'y' cannot be bound.*no dependencies"),
        (["first", "other"], r"parameter 'x', 'y' cannot be bound.*its dependencies"),
    ],
)
def test_unbindable_parameters(depends_on: list[str] | None, message: str) -> None:
    flow = Workflow("unbindable")
    flow.step(name="first")(lambda input: input)
    flow.step(name="other", depends_on=[])(lambda input: input)

    def step(x: int, y: int) -> int:
        return x + y

    with pytest.raises(WorkflowDefinitionError, match=message):
        flow.step(depends_on=depends_on)(step)


def test_obvious_value_already_taken_by_name_is_not_given_twice() -> None:
    flow = Workflow("taken")

    def root(input: int, payload: int) -> int:
        return input + payload

    with pytest.raises(WorkflowDefinitionError, match="parameter 'payload' cannot be bound"):
        flow.step(root)
    flow.step(name="a")(lambda input: input)

    def after(a: int, other: int) -> int:
        return a + other

    with pytest.raises(WorkflowDefinitionError, match="parameter 'other' cannot be bound"):
        flow.step(after)


def test_two_dependencies_need_their_names() -> None:
    flow = Workflow("two-deps")
    flow.step(name="a", depends_on=[])(lambda input: input)
    flow.step(name="b", depends_on=[])(lambda input: input)

    def join(a: int, something: int) -> int:
        return a + something

    with pytest.raises(WorkflowDefinitionError, match=r"step 'join': parameter 'something'"):
        flow.step(depends_on=["a", "b"])(join)


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_star_parameters_cannot_be_bound(kind: str) -> None:
    flow = Workflow("star")

    def with_args(*args: Any) -> Any:
        return args

    def with_kwargs(input: Any, **kwargs: Any) -> Any:
        return kwargs

    fn = with_args if kind == "args" else with_kwargs
    with pytest.raises(WorkflowDefinitionError, match=r"\*args and \*\*kwargs are not supported"):
        flow.step(fn)


def test_unreadable_signature() -> None:
    flow = Workflow("builtin")
    # Some builtins have no signature that inspect can read.
    with pytest.raises(WorkflowDefinitionError, match="cannot read the function's signature"):
        flow.step(name="d")(max)


def test_map_step_binding_item_input_and_ctx() -> None:
    flow = Workflow("map-binding")

    @flow.step
    def split(input: dict[str, Any]) -> list[int]:
        return list(input["values"])

    @flow.map(over="split")
    def scale(item: int, input: dict[str, Any], ctx: StepContext) -> tuple[int, int | None]:
        return (item * input["factor"], ctx.task_index)

    assert execute(flow, {"values": [1, 2, 3], "factor": 10}) == [(10, 0), (20, 1), (30, 2)]


def test_map_step_parameter_named_after_the_list_step_gets_the_element() -> None:
    flow = Workflow("map-named")
    flow.step(name="chunks")(lambda input: input)

    @flow.map(over="chunks")
    def work(chunks: int) -> int:
        return chunks + 1

    assert execute(flow, [1, 2]) == [2, 3]


def test_map_step_with_two_free_parameters_cannot_be_bound() -> None:
    flow = Workflow("map-bad")
    flow.step(name="chunks")(lambda input: input)

    def work(a: int, b: int) -> int:
        return a + b

    with pytest.raises(WorkflowDefinitionError, match="cannot be bound"):
        flow.map(over="chunks")(work)


def test_async_callables_behind_partial_or_dunder_call_are_awaited() -> None:
    async def add(value: int, *, amount: int) -> int:
        return value + amount

    class AsyncDoubler:
        async def __call__(self, value: int) -> int:
            return value * 2

    flow = Workflow("async-callables")
    flow.step(name="plus_one")(functools.partial(add, amount=1))
    flow.step(name="double")(AsyncDoubler())
    assert flow.steps["plus_one"].is_async
    assert flow.steps["double"].is_async
    assert execute(flow, 4) == 10
