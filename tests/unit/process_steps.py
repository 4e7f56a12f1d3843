"""Module-level step functions for process-isolated tests: a spawned child process imports them."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from pypgflow import StepContext


def double(value: int) -> int:
    return value * 2


async def async_double(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


def whoami(input: Any, ctx: StepContext) -> dict[str, Any]:
    return {"pid": os.getpid(), "step": ctx.step, "attempt": ctx.attempt, "input": input}


def write_pid_then_hang(path: str) -> None:
    """Record the child's pid, then run far past any test's timeout."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def fail(message: str) -> None:
    raise ValueError(message)


class CodedError(Exception):
    """An exception that pickles but cannot be rebuilt from its args in the parent."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def fail_with_coded_error(input: Any) -> None:
    raise CodedError(42, "the answer")


def exit_process(input: Any) -> None:
    sys.exit(3)


def die(input: Any) -> None:
    os._exit(7)
