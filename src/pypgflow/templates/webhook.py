"""Webhook delivery with retries and backoff, and a dead-letter view of the deliveries that
gave up.

A run delivers one event: ``{"url": "https://...", "payload": {...}, "headers": {...}}``
(headers optional). ``prepare`` checks it and encodes the body once; ``deliver`` POSTs it.
A 2xx is delivered; a 429 or a 5xx is tried again (after its ``Retry-After`` when it names
one, else after the backoff: 1 s, 2 s, 4 s, ... up to 10 minutes); a connection that fails or
times out too; any other 4xx fails at once (the receiver refuses it:
:class:`~pypgflow.errors.RequestRejected`). A delivery that exhausts its attempts ends its run
``failed``: such runs are the dead letters, listed by :func:`dead_letters` (or
``pypgflow runs --status failed --workflow webhook``, or the dashboard's Failed page) and sent
again by :func:`redrive` (or ``pypgflow retry --workflow webhook --status failed``), which
resumes them at ``deliver`` with a fresh attempt budget.

Each request carries ``Webhook-Id`` (the run's id: the same on every attempt, so receivers can
drop duplicates, since a delivery is at least once) and, with ``secret=``, a
``Webhook-Signature: sha256=HEX`` HMAC of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from pypgflow.app import App
from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.errors import InvalidArgument, RequestRejected
from pypgflow.records import RunInfo
from pypgflow.status import RunStatus
from pypgflow.templates.http import Response, judge, urllib_request
from pypgflow.workflow import Workflow

#: ``send(url, body, headers, timeout)``: one POST, its answer (raising OSError if none came)
Sender = Callable[[str, bytes, Mapping[str, str], float], Response]

#: 1 s, 2 s, 4 s, ... capped at 10 minutes: 8 attempts span about 2 minutes
DEFAULT_BACKOFF = Backoff(base=1.0, factor=2.0, max=600.0, jitter=0.1)


def urllib_send(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
    """The default sender: a POST with the standard library's urllib, under ``timeout``."""
    return urllib_request("POST", url, body=body, headers=headers, timeout=timeout)


def signature(secret: str, body: bytes) -> str:
    """The ``Webhook-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 under
    ``secret``; a receiver computes the same and compares (``hmac.compare_digest``)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_workflow(
    send: Sender | None = None,
    *,
    name: str = "webhook",
    max_attempts: int = 8,
    backoff: Backoff = DEFAULT_BACKOFF,
    request_timeout: float = 10.0,
    secret: str | None = None,
) -> Workflow:
    """The delivery workflow named ``name``: ``prepare`` then ``deliver`` (at most
    ``max_attempts`` attempts, ``backoff`` apart, each request under ``request_timeout``
    seconds). ``send`` replaces the HTTP call (default :func:`urllib_send`); its output is
    ``{"url", "status", "attempts"}``."""
    sender: Sender = send if send is not None else urllib_send
    if not callable(sender):
        raise InvalidArgument(f"webhook_workflow: send must be a function, got {sender!r}")
    if (
        isinstance(request_timeout, bool)
        or not isinstance(request_timeout, int | float)
        or not (request_timeout > 0)
    ):
        raise InvalidArgument(
            f"webhook_workflow: request_timeout must be seconds > 0, got {request_timeout!r}"
        )

    flow = Workflow(name)

    @flow.step(name="prepare", max_attempts=1)
    def prepare(input: Any) -> dict[str, Any]:
        if not isinstance(input, dict):
            raise RequestRejected(f"a delivery is an object with a url and a payload: {input!r}")
        url = input.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RequestRejected(f"a delivery needs an http(s) url, got {url!r}")
        headers = input.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise RequestRejected(f"headers must map names to strings, got {headers!r}")
        body = json.dumps(input.get("payload"), separators=(",", ":"), sort_keys=True)
        return {"url": url, "headers": headers, "body": body}

    @flow.step(
        name="deliver",
        max_attempts=max_attempts,
        backoff=backoff,
        timeout=request_timeout + 5.0,
    )
    def deliver(delivery: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        body = delivery["body"].encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pypgflow-webhook",
            **delivery["headers"],
            "Webhook-Id": ctx.run_id,
            "Webhook-Attempt": str(ctx.attempt),
        }
        if secret is not None:
            headers["Webhook-Signature"] = signature(secret, body)
        answer = sender(delivery["url"], body, headers, float(request_timeout))
        judge(answer.status, answer.retry_after, what=f"POST {delivery['url']}")
        ctx.logger.info("delivered to %s: HTTP %d", delivery["url"], answer.status)
        return {"url": delivery["url"], "status": answer.status, "attempts": ctx.attempt}

    return flow.validate()


def dead_letters(app: App, workflow: str = "webhook", *, limit: int = 50) -> list[RunInfo]:
    """The deliveries that gave up: failed runs of ``workflow``, newest first (the CLI's
    ``pypgflow runs --status failed --workflow webhook``)."""
    return app.list_runs(status=RunStatus.FAILED, workflow=workflow, limit=limit)


def redrive(app: App, workflow: str = "webhook", *, limit: int = 50) -> list[str]:
    """Send the dead letters again: each failed run of ``workflow`` (up to ``limit``, newest
    first) resumes at ``deliver`` with a fresh attempt budget. Returns the ids resumed (the
    CLI's ``pypgflow retry --workflow webhook --status failed``)."""
    return [run.id for run in dead_letters(app, workflow, limit=limit) if app.retry(run.id)]


#: the input of the starter's first run (``$module``: the starter module's name)
EXAMPLE = '{"url": "https://httpbin.org/post", "payload": {"event": "order.paid", "order": 7}}'

STARTER = '''\
"""Webhook delivery, from `pypgflow new webhook`: retries with backoff, failed deliveries
kept as dead letters.

    pypgflow migrate --app $module:app
    pypgflow worker $module:app
    pypgflow start $module:app webhook --wait \\
        --input '{"url": "https://httpbin.org/post", "payload": {"event": "order.paid"}}'
    pypgflow runs --app $module:app --status failed --workflow webhook   # the dead letters
    pypgflow retry --app $module:app --status failed --workflow webhook  # send them again
"""

import os

from pypgflow import App
from pypgflow.templates import webhook_workflow

# PYPGFLOW_DATABASE_URL if set, else the SQLite file pypgflow.db in the working directory.
app = App()

flow = app.register(
    webhook_workflow(
        max_attempts=8,  # then the run fails: a dead letter
        request_timeout=10.0,
        secret=os.environ.get("WEBHOOK_SECRET"),  # signs each body when set
    )
)
'''
