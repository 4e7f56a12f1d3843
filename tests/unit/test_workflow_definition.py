"""Defining workflows: the decorator, chains, DAGs, map steps, from_steps, and every definition error."""

from __future__ import annotations

from typing import Any

import pytest

from pypgflow import Backoff, Workflow, WorkflowDefinitionError, execute


def test_decorator_returns_the_function_unchanged() -> None:
    flow = Workflow("plain")

    def greet(input: Any) -> Any:
        return input

    def shout(state: Any) -> Any:
        return state

    assert flow.step(greet) is greet
    assert flow.step(max_attempts=5, timeout=10.0)(shout) is shout
    assert greet(1) == 1


def test_bare_and_called_decorator_forms() -> None:
    flow = Workflow("forms")

    @flow.step
    def first(input: Any) -> Any:
        return input

    @flow.step()
    def second(value: Any) -> Any:
        return value

    @flow.step(name="third_step", max_attempts=5, timeout=10.0, backoff=Backoff(base=0.5))
    def third(value: Any) -> Any:
        return value

    assert list(flow.steps) == ["first", "second", "third_step"]
    step = flow.steps["third_step"]
    assert step.fn is third
    assert (step.max_attempts, step.timeout, step.backoff) == (5, 10.0, Backoff(base=0.5))
    assert flow.steps["first"].max_attempts is None


def test_linear_chain_each_step_depends_on_the_one_before() -> None:
    flow = Workflow("chain")

    @flow.step
    def a(input: Any) -> Any:
        return input

    @flow.step
    def b(value: Any) -> Any:
        return value

    @flow.step
    def c(value: Any) -> Any:
        return value

    assert flow.steps["a"].depends_on == ()
    assert flow.steps["b"].depends_on == ("a",)
    assert flow.steps["c"].depends_on == ("b",)
    assert flow.roots == ("a",)
    assert flow.leaves == ("c",)
    assert flow.topological_order() == ("a", "b", "c")


def test_depends_on_takes_names_and_functions() -> None:
    flow = Workflow("dag")

    @flow.step
    def fetch(input: Any) -> Any:
        return input

    @flow.step(depends_on=[fetch])
    def left(fetch: Any) -> Any:
        return fetch

    @flow.step(depends_on=["fetch"])
    def right(fetch: Any) -> Any:
        return fetch

    @flow.step(depends_on=[left, "right"])
    def join(left: Any, right: Any) -> Any:
        return (left, right)

    assert flow.steps["left"].depends_on == ("fetch",)
    assert flow.steps["right"].depends_on == ("fetch",)
    assert flow.steps["join"].depends_on == ("left", "right")
    assert flow.dependents() == {
        "fetch": ("left", "right"),
        "left": ("join",),
        "right": ("join",),
        "join": (),
    }


def test_empty_depends_on_makes_a_root_even_after_other_steps() -> None:
    flow = Workflow("roots")

    @flow.step
    def a(input: Any) -> Any:
        return input

    @flow.step(depends_on=[])
    def b(input: Any) -> Any:
        return input

    assert flow.roots == ("a", "b")
    assert flow.leaves == ("a", "b")


def test_depends_on_may_name_a_step_declared_later() -> None:
    flow = Workflow("forward")

    @flow.step(depends_on=["later"])
    def early(later: int) -> int:
        return later + 1

    @flow.step(depends_on=[])
    def later(input: int) -> int:
        return input * 10

    assert flow.validate() is flow
    assert flow.topological_order() == ("later", "early")
    assert execute(flow, 2) == 21


def test_unknown_dependency_is_reported_by_validate_and_execute() -> None:
    flow = Workflow("unknown")

    @flow.step(depends_on=["missing"])
    def a(missing: Any) -> Any:
        return missing

    with pytest.raises(WorkflowDefinitionError, match=r"step 'a'.*unknown step 'missing'"):
        flow.validate()
    with pytest.raises(WorkflowDefinitionError, match="unknown step 'missing'"):
        execute(flow, 1)


def test_cycle_is_rejected_when_it_is_declared() -> None:
    flow = Workflow("cyclic")

    @flow.step(depends_on=["b"])
    def a(b: Any) -> Any:
        return b

    def b(a: Any) -> Any:
        return a

    with pytest.raises(
        WorkflowDefinitionError, match=r"dependency cycle (a -> b -> a|b -> a -> b)"
    ):
        flow.step(depends_on=[a])(b)
    # The failed declaration left the workflow as it was.
    assert list(flow.steps) == ["a"]


def test_longer_cycle_names_every_step_in_it() -> None:
    flow = Workflow("cyclic3")
    flow.step(name="a", depends_on=["c"])(lambda c: c)
    flow.step(name="b", depends_on=["a"])(lambda a: a)
    with pytest.raises(WorkflowDefinitionError, match="cycle") as info:
        flow.step(name="c", depends_on=["b"])(lambda b: b)
    assert all(name in str(info.value) for name in ("a", "b", "c"))


def test_step_cannot_depend_on_itself() -> None:
    flow = Workflow("selfish")
    with pytest.raises(WorkflowDefinitionError, match="cannot depend on itself"):
        flow.step(name="a", depends_on=["a"])(lambda a: a)


def test_duplicate_step_name() -> None:
    flow = Workflow("dup")

    @flow.step
    def a(input: Any) -> Any:
        return input

    with pytest.raises(WorkflowDefinitionError, match=r"step 'a': duplicate step name"):
        flow.step(name="a")(lambda value: value)


def test_depends_on_naming_a_step_twice() -> None:
    flow = Workflow("twice")
    flow.step(name="a")(lambda input: input)
    with pytest.raises(WorkflowDefinitionError, match="names a step twice"):
        flow.step(name="b", depends_on=["a", "a"])(lambda a: a)


def test_depends_on_a_function_that_is_not_a_step() -> None:
    flow = Workflow("stranger")

    def outsider(input: Any) -> Any:
        return input

    with pytest.raises(WorkflowDefinitionError, match=r"outsider.*not a step of this workflow"):
        flow.step(name="a", depends_on=[outsider])(lambda outsider: outsider)


@pytest.mark.parametrize("depends_on", ["a", 3, [3]])
def test_depends_on_must_be_a_list_of_names_or_functions(depends_on: Any) -> None:
    flow = Workflow("badref")
    flow.step(name="a")(lambda input: input)
    with pytest.raises(WorkflowDefinitionError, match="depends_on"):
        flow.step(name="b", depends_on=depends_on)(lambda a: a)


def test_empty_workflow() -> None:
    flow = Workflow("nothing")
    with pytest.raises(WorkflowDefinitionError, match="'nothing' has no steps"):
        flow.validate()
    with pytest.raises(WorkflowDefinitionError, match="has no steps"):
        execute(flow, {})
    with pytest.raises(WorkflowDefinitionError, match="has no steps"):
        Workflow.from_steps("nothing", [])


@pytest.mark.parametrize("name", ["input", "ctx"])
def test_reserved_step_names(name: str) -> None:
    flow = Workflow("reserved")
    with pytest.raises(WorkflowDefinitionError, match="reserved"):
        flow.step(name=name)(lambda value: value)


@pytest.mark.parametrize("name", ["", "has space", "x" * 201, "a/b", 7, None])
def test_invalid_workflow_names(name: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="invalid workflow name"):
        Workflow(name)


def test_invalid_step_name() -> None:
    flow = Workflow("names")
    with pytest.raises(WorkflowDefinitionError, match="invalid step name"):
        flow.step(name="no spaces please")(lambda input: input)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"max_attempts": True}, "max_attempts must be an integer >= 1"),
        ({"max_attempts": 2.5}, "max_attempts must be an integer >= 1"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": -1.0}, "timeout must be a number of seconds > 0"),
        ({"timeout": float("nan")}, "timeout must be a number of seconds > 0"),
        ({"timeout": "10"}, "timeout must be a number of seconds > 0"),
        ({"backoff": 1.0}, "backoff must be a pypgflow.Backoff"),
        ({"isolation": "fiber"}, "isolation must be 'thread' or 'process'"),
    ],
)
def test_invalid_step_options(options: dict[str, Any], message: str) -> None:
    flow = Workflow("opts")

    def step(input: Any) -> Any:
        return input

    with pytest.raises(WorkflowDefinitionError, match=message):
        flow.step(**options)(step)
    if "isolation" not in options:
        with pytest.raises(WorkflowDefinitionError, match=message):
            Workflow("opts2", **options)


def test_process_isolation_needs_a_module_level_function() -> None:
    flow = Workflow("isolated")

    def local(input: Any) -> Any:
        return input

    with pytest.raises(WorkflowDefinitionError, match="module-level function"):
        flow.step(isolation="process")(local)
    with pytest.raises(WorkflowDefinitionError, match="module-level function"):
        flow.step(name="lam", isolation="process")(lambda input: input)


def test_step_must_be_callable_and_named() -> None:
    flow = Workflow("callables")
    with pytest.raises(WorkflowDefinitionError, match="must be a function"):
        flow.step(name="x")(42)  # type: ignore[type-var]

    class Doubler:
        def __call__(self, value: int) -> int:
            return value * 2

    with pytest.raises(WorkflowDefinitionError, match="has no __name__"):
        flow.step(Doubler())
    flow.step(name="double")(Doubler())
    assert execute(flow, 4) == 8


def test_from_steps_builds_a_linear_chain() -> None:
    def receive(request: dict[str, Any]) -> dict[str, Any]:
        return {**request, "received": True}

    def select_model(request: dict[str, Any]) -> dict[str, Any]:
        return {**request, "model": "small"}

    def publish(request: dict[str, Any]) -> dict[str, Any]:
        return {**request, "published": True}

    flow = Workflow.from_steps(
        "llm_request",
        [("receive", receive), ("select_model", select_model), publish],
        max_attempts=2,
    )
    assert list(flow.steps) == ["receive", "select_model", "publish"]
    assert flow.steps["publish"].depends_on == ("select_model",)
    assert flow.max_attempts == 2
    assert execute(flow, {"prompt": "hi"}) == {
        "prompt": "hi",
        "received": True,
        "model": "small",
        "published": True,
    }


@pytest.mark.parametrize(
    "entry", [("only-a-name",), ("a", "not callable"), (1, print), "a string", 42]
)
def test_from_steps_rejects_malformed_entries(entry: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"\(name, function\) pair"):
        Workflow.from_steps("bad", [entry])


def test_map_step_definition() -> None:
    flow = Workflow("mapping")

    @flow.step
    def split(input: str) -> list[str]:
        return input.split()

    @flow.map(over=split)
    def upper(word: str) -> str:
        return word.upper()

    @flow.map(over=None, name="root_map")
    def inc(value: int) -> int:
        return value + 1

    step = flow.steps["upper"]
    assert step.is_map
    assert step.map_over == "split"
    assert step.depends_on == ("split",)
    root = flow.steps["root_map"]
    assert root.is_map
    assert root.map_over is None
    assert root.depends_on == ()


def test_map_over_an_unknown_step_is_reported_by_validate() -> None:
    flow = Workflow("mapping-unknown")
    flow.map(over="nowhere", name="m")(lambda item: item)
    with pytest.raises(WorkflowDefinitionError, match="unknown step 'nowhere'"):
        flow.validate()


def test_introspection() -> None:
    flow = Workflow("intro", max_attempts=4, timeout=5.0, backoff=Backoff(base=0.1))

    @flow.step
    def a(input: Any) -> Any:
        return input

    @flow.step(timeout=2.0, isolation="thread")
    def b(value: Any) -> Any:
        return value

    assert len(flow) == 2
    assert [s.name for s in flow] == ["a", "b"]
    assert repr(flow) == "Workflow('intro', steps=['a', 'b'])"
    assert (flow.max_attempts, flow.timeout, flow.backoff) == (4, 5.0, Backoff(base=0.1))
    shape = flow.shape()
    assert shape[1] == {
        "name": "b",
        "depends_on": ["a"],
        "map": False,
        "map_over": None,
        "max_attempts": None,
        "timeout": 2.0,
        "backoff": None,
        "isolation": "thread",
    }
    with pytest.raises(TypeError):
        flow.steps["c"] = flow.steps["a"]  # type: ignore[index]


def test_result_is_final_step_or_dict_of_leaves() -> None:
    flow = Workflow("leaves")
    flow.step(name="a")(lambda input: input)
    flow.step(name="b", depends_on=["a"])(lambda a: a)
    flow.step(name="c", depends_on=["a"])(lambda a: a)
    assert flow.leaves == ("b", "c")
    assert flow.result_from({"a": 1, "b": 2, "c": 3}) == {"b": 2, "c": 3}
