"""The workflow the telemetry tests trace and measure: a sync step and an async step, each
making a span of its own (an HTTP call, a database write), the first failing its first attempt
when asked to."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry import trace

from pypgflow import Backoff, Workflow
from pypgflow.context import StepContext

traced = Workflow("traced", max_attempts=2, backoff=Backoff(base=0.0, jitter=0.0))


@traced.step
def fetch(input: dict[str, Any], ctx: StepContext) -> int:
    with trace.get_tracer("tests.telemetry").start_as_current_span("fetch.http"):
        ctx.logger.info("fetching %s", input["n"])
        if input.get("fail_first") and ctx.attempt == 1:
            raise ValueError("the first try fails")
    return int(input["n"])


@traced.step
async def store(fetch: int) -> int:
    with trace.get_tracer("tests.telemetry").start_as_current_span("store.db"):
        await asyncio.sleep(0)
    return fetch * 2
