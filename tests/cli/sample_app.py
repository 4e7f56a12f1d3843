"""A small app for the CLI tests, pointed at each test's database through PYPGFLOW_DATABASE_URL.

``tests.cli.sample_app:create_app`` is a factory; ``tests.cli.sample_app:app`` is built when it is
looked up (a module ``__getattr__``), so importing this module never connects anywhere.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pypgflow import Backoff, NonRetryable, Workflow
from pypgflow.app import App

hello = Workflow("hello")


@hello.step
def greet(input: dict[str, str]) -> dict[str, str]:
    return {**input, "greeting": f"Hello, {input['name']}"}


@hello.step
def shout(state: dict[str, str]) -> dict[str, str]:
    return {**state, "greeting": state["greeting"].upper()}


# Fails for good at its second step, after two quick attempts.
broken = Workflow("broken", max_attempts=2, backoff=Backoff(base=0.0, jitter=0.0))


@broken.step
def prepare(input: Any) -> Any:
    return input


@broken.step
def explode(data: Any) -> Any:
    raise ValueError(f"boom: {data}")


# Fails until a test sets fixed["done"]: for `pypgflow retry`.
fixed = {"done": False}
fragile = Workflow("fragile", max_attempts=1)


@fragile.step
def check(input: Any) -> str:
    if not fixed["done"]:
        raise RuntimeError("not fixed yet")
    return "fixed"


# Sleeps as many seconds as its input: for graceful shutdown.
nap = Workflow("nap")


@nap.step
def sleep(input: float) -> float:
    time.sleep(input)
    return input


# Waits for the signal "approved" after its first step: for `pypgflow signal`.
gated = Workflow("gated")


@gated.step
def ask(input: Any) -> Any:
    return input


gated.wait_for("approval", signal="approved", depends_on=["ask"])


@gated.step(depends_on=["ask", "approval"])
def proceed(ask: Any, approval: Any) -> dict[str, Any]:
    return {"asked": ask, "approval": approval}


# Refuses its input: a NonRetryable failure, with attempts left that it does not use.
refused = Workflow("refused", max_attempts=3)


@refused.step
def refuse(input: Any) -> Any:
    raise NonRetryable(f"no such account: {input}")


WORKFLOWS = (hello, broken, fragile, nap, gated, refused)

not_an_app = 42


def make_nothing() -> None:
    return None


def create_app() -> App:
    return App(os.environ["PYPGFLOW_DATABASE_URL"], workflows=WORKFLOWS)


def impatient_app() -> App:
    """An app that counts an instance offline after half a second without a heartbeat."""
    return App(os.environ["PYPGFLOW_DATABASE_URL"], workflows=WORKFLOWS, stale_after=0.5)


def queued_app() -> App:
    """An app whose ``hello`` runs on its own queue, ``greetings``, unless a start names one."""
    app = App(os.environ["PYPGFLOW_DATABASE_URL"], workflows=(broken, fragile, nap))
    app.register(hello, queue="greetings")
    return app


def pinned_app() -> App:
    """An app that ignores PYPGFLOW_DATABASE_URL: its URL comes from elsewhere."""
    return App(os.environ["SAMPLE_PINNED_URL"], schema="pinned", workflows=WORKFLOWS)


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
