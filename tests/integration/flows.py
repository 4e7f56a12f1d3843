"""The workflows of the integration tests, shared by the tests and the worker processes.

Every step appends one JSON line per event to the log file named in the run's input (``log``):
``{"run", "step", "index", "attempt", "pid", "instance", "event", "t"}`` (``index``: a map element's,
else None), where ``event`` is ``begin`` when
the step function is entered, ``end`` when it returns, ``cancelled`` when it saw a cancellation.
Each line is a single ``write`` on an ``O_APPEND`` descriptor, so lines from several processes
never interleave.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from pypgflow import StepContext, Workflow


def record(log: str, ctx: StepContext, event: str) -> None:
    line = json.dumps(
        {
            "run": ctx.run_id,
            "step": ctx.step,
            "index": ctx.task_index,
            "attempt": ctx.attempt,
            "pid": os.getpid(),
            "instance": ctx.instance_id,
            "event": event,
            "t": time.time(),
        }
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every event line of a log file written by :func:`record` (none if it does not exist)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- it_one: one step ---------------------------------------------------------------------------

one = Workflow("it_one")


@one.step
def work(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return {"i": input["i"], "steps": [ctx.step]}


# -- it_three: a linear chain of three steps -----------------------------------------------------

three = Workflow("it_three")


@three.step
def first(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return {"i": input["i"], "steps": [ctx.step]}


@three.step
def second(previous: dict[str, Any], input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return {"i": previous["i"], "steps": [*previous["steps"], ctx.step]}


@three.step
def third(previous: dict[str, Any], input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return {"i": previous["i"], "steps": [*previous["steps"], ctx.step]}


# -- it_dag: a step, a map over its list, a step after the map -------------------------------

dag = Workflow("it_dag", max_attempts=10)


@dag.step
def split(input: dict[str, Any], ctx: StepContext) -> list[int]:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return [int(input["i"]) + k for k in range(int(input.get("width", 3)))]


@dag.map(over=split)
def square(item: int, input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return item * item


@dag.step(depends_on=[square])
def total(square: list[int], input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return sum(square)


def dag_output(i: int, width: int = 3) -> int:
    """What an it_dag run on input ``i`` returns (its ``total``)."""
    return sum((i + k) ** 2 for k in range(width))


# -- it_slow / it_slow_async: one long step that notices cancellation ----------------------------


def _is_slow_here(input: dict[str, Any], ctx: StepContext) -> bool:
    """Slow everywhere, or only on the instance named by ``slow_on``."""
    slow_on = input.get("slow_on")
    return slow_on is None or slow_on == ctx.instance_id


slow = Workflow("it_slow")


@slow.step
def nap(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Sleeps ``seconds`` (a sync step), returning early if the worker cancels it."""
    record(input["log"], ctx, "begin")
    if _is_slow_here(input, ctx):
        deadline = time.monotonic() + input["seconds"]
        while time.monotonic() < deadline:
            if ctx.cancelled:
                record(input["log"], ctx, "cancelled")
                return {"cancelled": True}
            time.sleep(0.02)
    record(input["log"], ctx, "end")
    return {"slept": ctx.instance_id}


slow_async = Workflow("it_slow_async")


@slow_async.step
async def nap_async(input: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    """Sleeps ``seconds`` (an async step: the worker cancels the coroutine itself)."""
    record(input["log"], ctx, "begin")
    if _is_slow_here(input, ctx):
        try:
            await asyncio.sleep(input["seconds"])
        except asyncio.CancelledError:
            record(input["log"], ctx, "cancelled")
            raise
    record(input["log"], ctx, "end")
    return {"slept": ctx.instance_id}


# -- it_poison: a step that kills the worker process running it, every time --------------------

poison = Workflow("it_poison")


@poison.step(max_attempts=20)
def explode(input: dict[str, Any], ctx: StepContext) -> None:
    """Kills its own process (as a segfault or the OOM killer would) after ``after`` seconds."""
    record(input["log"], ctx, "begin")
    time.sleep(input.get("after", 0))
    os._exit(1)


# -- it_limited: a step with a fleet-wide concurrency limit, then one with a rate limit -------

#: what it_limited's steps may do: at most EXPORTS exports at once; at most CALLS[0] calls in
#: any CALLS[1] seconds
EXPORTS = 3
CALLS = (20, 0.5)

limited = Workflow("it_limited")


@limited.step(concurrency=EXPORTS)
def export(input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx, "begin")
    time.sleep(input.get("sleep", 0))
    record(input["log"], ctx, "end")
    return int(input["i"])


@limited.step(rate_limit="it_api")
def call(export: int, input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx, "begin")
    record(input["log"], ctx, "end")
    return export


ALL = [one, three, dag, slow, slow_async, poison, limited]


def configure(app: Any) -> None:
    """What every process's App declares besides the workflows: it_limited's rate limit."""
    app.rate_limit("it_api", CALLS[0], per=CALLS[1])


def deploy(version: str) -> Workflow:
    """``it_deploy`` at ``version`` "1" (reserve, capture) or "2" (reserve, settle: a renamed
    step, as a deploy makes). The second step waits for the file named ``gate`` to exist."""
    flow = Workflow("it_deploy", version=version)

    @flow.step
    def reserve(input: dict[str, Any], ctx: StepContext) -> int:
        record(input["log"], ctx, "begin")
        return int(input["amount"])

    @flow.step(name="capture" if version == "1" else "settle", depends_on=[reserve])
    def second(reserve: int, input: dict[str, Any], ctx: StepContext) -> str:
        record(input["log"], ctx, "begin")
        while not Path(input["gate"]).exists() and not ctx.cancelled:
            time.sleep(0.05)
        return f"{reserve} by version {version}"

    return flow
