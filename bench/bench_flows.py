"""The workflows the benchmarks measure on pypgflow (bench/peers.py, bench/durable.py), in one
place: each first step notes the time of its first line through the probe
(bench/peers_probe.py), so that a benchmark can time a run from the producer's call to the step.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from peers_probe import PROBE
from pypgflow import Workflow

noop = Workflow("bench_noop")


@noop.step
async def noop_step(input: Any) -> Any:
    now = time.time()
    if PROBE.armed:
        PROBE.hit(now, input["i"])
    return input


noop_sync = Workflow("bench_noop_sync")


@noop_sync.step(name="noop")
def noop_blocking(input: Any) -> Any:
    now = time.time()
    if PROBE.armed:
        PROBE.hit(now, input["i"])
    return input


diamond = Workflow("bench_diamond")


@diamond.step
async def top(input: Any) -> int:
    now = time.time()
    if PROBE.armed:
        PROBE.hit(now, input["i"])
    return 1


@diamond.step(depends_on=["top"])
async def left(top: int) -> int:
    return top + 1


@diamond.step(depends_on=["top"])
async def right(top: int) -> int:
    return top + 2


@diamond.step(depends_on=["left", "right"])
async def bottom(left: int, right: int) -> int:
    return left + right


#: the concurrency limit of bench_noop_limited's step (bench/durable.py --limits)
LIMITED_CONCURRENCY = 50

noop_limited = Workflow("bench_noop_limited")


@noop_limited.step(name="noop", concurrency=LIMITED_CONCURRENCY)
async def noop_limited_step(input: Any) -> Any:
    now = time.time()
    if PROBE.armed:
        PROBE.hit(now, input["i"])
    return input


nap = Workflow("bench_nap")


@nap.step(name="nap")
async def nap_step(input: Any) -> None:
    await asyncio.sleep(input["sleep"])


#: every workflow, by name
BY_NAME: dict[str, Workflow] = {
    flow.name: flow for flow in (noop, noop_sync, diamond, noop_limited, nap)
}
