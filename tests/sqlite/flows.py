"""Workflows shared by the SQLite tests and their worker processes (``worker_proc``).

Each step appends one JSON line per execution to the log file named in the run's input
(``{"run", "step", "attempt", "pid", "instance", "t"}``, ``t`` when the step function was
entered), with a single ``write`` on an ``O_APPEND`` descriptor, so lines from several processes
never interleave.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pypgflow import StepContext, Workflow


def record(log: str, ctx: StepContext) -> None:
    line = json.dumps(
        {
            "run": ctx.run_id,
            "step": ctx.step,
            "attempt": ctx.attempt,
            "pid": os.getpid(),
            "instance": ctx.instance_id,
            "t": time.time(),
        }
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- sq_chain: three steps in a line, each recording its execution ------------------------------

chain = Workflow("sq_chain")


@chain.step
def first(input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx)
    time.sleep(input.get("sleep", 0))
    return int(input["i"])


@chain.step
def second(first: int, input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx)
    time.sleep(input.get("sleep", 0))
    return first * 2


@chain.step
def third(second: int, input: dict[str, Any], ctx: StepContext) -> int:
    record(input["log"], ctx)
    time.sleep(input.get("sleep", 0))
    return second + 1


# -- sq_ping: one step, for start latency --------------------------------------------------------

ping = Workflow("sq_ping")


@ping.step
def pong(input: dict[str, Any], ctx: StepContext) -> str:
    record(input["log"], ctx)
    return "pong"


# -- sq_slow: one long step, long only on the instance named by ``slow_on`` -------------------

slow = Workflow("sq_slow")


@slow.step
def nap(input: dict[str, Any], ctx: StepContext) -> str | None:
    record(input["log"], ctx)
    if input.get("slow_on") in (None, ctx.instance_id):
        deadline = time.monotonic() + input["seconds"]
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.02)
    return ctx.instance_id


ALL = [chain, ping, slow]
