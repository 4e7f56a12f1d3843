"""Per-step overhead of the in-process executor against calling the step functions directly.

Run: python bench/executor_overhead.py [--repeat 7]
Prints the median of several timed batches for each shape, and the overhead per step in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from pypgflow import Workflow, execute


def noop(value: Any = None) -> Any:
    return value


async def anoop(value: Any = None) -> Any:
    return value


def linear(n: int, fn: Callable[..., Any]) -> Workflow:
    flow = Workflow(f"linear-{n}-{fn.__name__}")
    for i in range(n):
        flow.step(name=f"s{i}")(fn)
    return flow


def fan_out(n: int, fn: Callable[..., Any]) -> Workflow:
    flow = Workflow(f"fanout-{n}-{fn.__name__}")

    def root(input: Any) -> Any:
        return input

    flow.step(root)
    for i in range(n):
        flow.step(name=f"b{i}", depends_on=["root"])(fn)

    def join(ctx: Any) -> int:
        return n

    flow.step(join, depends_on=[f"b{i}" for i in range(n)])
    return flow


def direct_linear(n: int, fn: Callable[..., Any]) -> Callable[[], Any]:
    if asyncio.iscoroutinefunction(fn):

        async def chain() -> Any:
            value = 1
            for _ in range(n):
                value = await fn(value)
            return value

        return lambda: asyncio.run(chain())

    def run() -> Any:
        value = 1
        for _ in range(n):
            value = fn(value)
        return value

    return run


def direct_fan_out(n: int, fn: Callable[..., Any]) -> Callable[[], Any]:
    if asyncio.iscoroutinefunction(fn):

        async def gather() -> Any:
            return await asyncio.gather(*(fn(1) for _ in range(n)))

        return lambda: asyncio.run(gather())

    return lambda: [fn(1) for _ in range(n + 2)]


def per_call(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    """Median seconds per call over ``repeat`` batches of ``calls`` calls."""
    fn()  # warm up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="timed batches per figure")
    parser.add_argument("--calls", type=int, default=200, help="executions per batch")
    args = parser.parse_args()
    print(f"{'shape':<34} {'executor':>12} {'direct':>12} {'overhead/step':>14}")
    for label, build, direct, steps in (
        ("10-step linear, sync steps", linear, direct_linear, 10),
        ("10-step linear, async steps", linear, direct_linear, 10),
        ("100-branch fan-out, sync steps", fan_out, direct_fan_out, 102),
        ("100-branch fan-out, async steps", fan_out, direct_fan_out, 102),
    ):
        fn = anoop if "async" in label else noop
        n = 10 if "linear" in label else 100
        flow = build(n, fn)
        calls = args.calls if "linear" in label else max(10, args.calls // 10)
        executed = per_call(lambda flow=flow: execute(flow, 1), calls, args.repeat)
        baseline = per_call(direct(n, fn), calls, args.repeat)
        overhead_us = (executed - baseline) / steps * 1e6
        print(
            f"{label:<34} {executed * 1e6:>10.1f}µs {baseline * 1e6:>10.1f}µs {overhead_us:>12.2f}µs"
        )


if __name__ == "__main__":
    main()
