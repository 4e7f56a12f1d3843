"""The browser tests' app: the demo's two workflows, and one whose step fails until told not to
(a retry by click then completes it)."""

from __future__ import annotations

import threading
from typing import Any

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.demo import document_stats_workflow, llm_request_workflow

#: set: charge fails; cleared: it succeeds
FAIL = threading.Event()


def payment_workflow() -> Workflow:
    flow = Workflow("payment", max_attempts=1)

    @flow.step
    def reserve(input: Any) -> Any:
        return {"order": input["order"], "reserved": True}

    @flow.step
    def charge(reserve: Any) -> Any:
        if FAIL.is_set():
            raise ConnectionError(f"card processor unreachable for order {reserve['order']}")
        return {**reserve, "charged": True}

    return flow


def create_app(url: str, pace: float = 0.3) -> App:
    app = App(url)
    app.register(llm_request_workflow(pace))
    app.register(document_stats_workflow(pace))
    app.register(payment_workflow())
    return app
