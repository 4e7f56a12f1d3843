"""The llm_request and webhook templates run in-process (pypgflow.execute): their steps, their
retries (rate limits wait their Retry-After, refusals fail at once, transient failures back
off), and the registry of templates with the starter modules `pypgflow new` writes."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import pytest

from pypgflow import Backoff, InvalidArgument, WorkflowFailed, execute
from pypgflow.templates import TEMPLATES, llm_request_workflow, template, webhook_workflow
from pypgflow.templates.http import Response
from pypgflow.templates.llm_request import FakeModel, FakeRateLimitError
from pypgflow.templates.webhook import signature
from tests.http_answers import http_answers

pytestmark = pytest.mark.timeout(30)

QUICK = Backoff(base=0.5, factor=2.0, jitter=0.0)


class Sleeps:
    """The executor's ``sleep``: records each delay instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def run(flow: Any, input: Any, sleeps: Sleeps | None = None) -> Any:
    return execute(flow, input, retry="step", sleep=sleeps or Sleeps())


# -- llm_request ---------------------------------------------------------------------------------


def test_llm_request_answers_with_the_fake_model_by_default() -> None:
    flow = llm_request_workflow()
    assert list(flow.steps) == ["receive", "select_model", "call_model", "publish"]
    out = run(flow, {"prompt": "  Why sagas?  ", "request_id": 7})
    assert out == {
        "prompt": "Why sagas?",
        "request_id": 7,
        "model": "small",
        "completion": "[small] Why sagas?",
    }
    assert run(flow, {"prompt": "x" * 201})["model"] == "large"
    assert run(flow, {"prompt": "hi", "model": "gpt-x"})["completion"] == "[gpt-x] hi"


def test_a_rate_limit_waits_exactly_its_retry_after() -> None:
    sleeps = Sleeps()
    flow = llm_request_workflow(FakeModel(retry_after=7.5), backoff=QUICK)
    out = run(flow, {"prompt": "hello", "simulate": "rate_limit"}, sleeps)
    assert out["completion"] == "[small] hello"
    assert sleeps.delays == [7.5]  # the provider's delay, not the backoff's 0.5


def test_transient_failures_back_off_and_refusals_fail_at_once() -> None:
    calls: list[str] = []

    def flaky(request: dict[str, Any]) -> str:
        calls.append(request["prompt"])
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return "fine"

    sleeps = Sleeps()
    assert (
        run(llm_request_workflow(flaky, backoff=QUICK), {"prompt": "p"}, sleeps)["completion"]
        == "fine"
    )
    assert sleeps.delays == [0.5, 1.0]

    with pytest.raises(WorkflowFailed) as failed:
        run(llm_request_workflow(backoff=QUICK), {"prompt": "p", "simulate": "bad_request"})
    assert (failed.value.step, failed.value.attempts) == ("call_model", 1)
    assert failed.value.errors[-1].type == "RequestRejected"
    assert "HTTP 400" in failed.value.errors[-1].message


def test_a_model_that_stays_rate_limited_fails_after_its_attempts() -> None:
    def always_limited(request: dict[str, Any]) -> str:
        raise FakeRateLimitError(2.0)

    sleeps = Sleeps()
    with pytest.raises(WorkflowFailed) as failed:
        run(llm_request_workflow(always_limited, max_attempts=3), {"prompt": "p"}, sleeps)
    assert failed.value.attempts == 3
    assert sleeps.delays == [2.0, 2.0]
    assert failed.value.errors[-1].type == "RetryAfter"


def test_a_request_without_a_prompt_fails_at_receive() -> None:
    for bad in (None, {}, {"prompt": "   "}, {"prompt": 3}):
        with pytest.raises(WorkflowFailed) as failed:
            run(llm_request_workflow(), bad)
        assert (failed.value.step, failed.value.attempts) == ("receive", 1)
        assert failed.value.errors[-1].type == "InvalidRequest"


def test_llm_request_takes_its_selection_and_publication() -> None:
    published: list[dict[str, Any]] = []
    flow = llm_request_workflow(
        lambda request: request["prompt"][::-1],
        name="support_answers",
        select_model=lambda request: "m1",
        publish=lambda result: published.append(result) or {"id": len(published)},
    )
    assert flow.name == "support_answers"
    assert run(flow, {"prompt": "abc"}) == {"id": 1}
    assert published == [{"prompt": "abc", "model": "m1", "completion": "cba"}]
    with pytest.raises(InvalidArgument, match="call_model must be a function"):
        llm_request_workflow("gpt")  # type: ignore[arg-type]


# -- webhook -------------------------------------------------------------------------------------


class Receiver:
    """A sender that answers from a script and keeps what it was sent."""

    def __init__(self, *answers: Response) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Response:
        self.sent.append((url, body, dict(headers), timeout))
        return self.answers[min(len(self.sent), len(self.answers)) - 1]


EVENT = {"url": "https://example.com/hooks", "payload": {"event": "paid", "order": 7}}


def test_a_delivery_posts_the_payload_with_its_id_and_signature() -> None:
    receiver = Receiver(Response(204))
    flow = webhook_workflow(receiver, secret="s3cret", request_timeout=4)
    out = run(flow, {**EVENT, "headers": {"X-Tenant": "acme"}})
    assert out == {"url": EVENT["url"], "status": 204, "attempts": 1}
    ((url, body, headers, timeout),) = receiver.sent
    assert (url, timeout) == (EVENT["url"], 4.0)
    assert json.loads(body) == EVENT["payload"]
    assert headers["X-Tenant"] == "acme"
    assert headers["Content-Type"] == "application/json"
    assert headers["Webhook-Id"]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["Webhook-Signature"] == expected == signature("s3cret", body)


def test_a_delivery_retries_5xx_and_429_and_gives_up_on_other_4xx() -> None:
    sleeps = Sleeps()
    receiver = Receiver(Response(503), Response(429, {"retry-after": "30"}), Response(200))
    out = run(webhook_workflow(receiver, backoff=QUICK), EVENT, sleeps)
    assert (out["status"], out["attempts"]) == (200, 3)
    assert sleeps.delays == [0.5, 30.0]  # the backoff, then the receiver's Retry-After
    ids = {headers["Webhook-Id"] for _, _, headers, _ in receiver.sent}
    assert len(ids) == 1  # the same id on every attempt: receivers drop duplicates
    assert [h["Webhook-Attempt"] for _, _, h, _ in receiver.sent] == ["1", "2", "3"]

    refused = Receiver(Response(410))
    with pytest.raises(WorkflowFailed) as failed:
        run(webhook_workflow(refused, backoff=QUICK), EVENT)
    assert (failed.value.step, failed.value.attempts) == ("deliver", 1)
    assert failed.value.errors[-1].type == "RequestRejected"


def test_a_delivery_that_exhausts_its_attempts_fails() -> None:
    down = Receiver(Response(500))
    with pytest.raises(WorkflowFailed) as failed:
        run(webhook_workflow(down, max_attempts=4, backoff=QUICK), EVENT)
    assert (failed.value.step, failed.value.attempts) == ("deliver", 4)
    assert [e.type for e in failed.value.errors] == ["HTTPStatusError"] * 4
    assert len(down.sent) == 4


def test_a_delivery_with_a_bad_event_fails_at_prepare() -> None:
    for bad in (None, {"payload": {}}, {"url": "ftp://x"}, {**EVENT, "headers": {"a": 1}}):
        with pytest.raises(WorkflowFailed) as failed:
            run(webhook_workflow(Receiver(Response(200))), bad)
        assert (failed.value.step, failed.value.attempts) == ("prepare", 1)
    with pytest.raises(InvalidArgument, match="request_timeout"):
        webhook_workflow(request_timeout=0)


def test_the_default_sender_posts_with_urllib() -> None:
    sleeps = Sleeps()
    with http_answers() as server:
        server.answer(502).answer(202, "queued")
        out = run(webhook_workflow(backoff=QUICK), {**EVENT, "url": server.url + "/in"}, sleeps)
    assert (out["status"], out["attempts"]) == (202, 2)
    assert sleeps.delays == [0.5]
    assert [r.path for r in server.received] == ["/in", "/in"]
    assert json.loads(server.received[0].body) == EVENT["payload"]


# -- the registry and the starters ---------------------------------------------------------------


def test_the_templates_are_the_six_named() -> None:
    assert list(TEMPLATES) == ["llm_request", "webhook", "etl", "map_reduce", "saga", "report"]
    with pytest.raises(InvalidArgument) as unknown:
        template("cron")
    assert "llm_request, webhook, etl, map_reduce, saga, report" in str(unknown.value)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_each_starter_is_a_module_with_an_app_and_a_json_example(name: str) -> None:
    source = template(name).starter("orders_flow")
    compile(source, "orders_flow.py", "exec")
    assert "$module" not in source  # filled in
    assert "app = App()" in source
    assert "orders_flow:app" in source
    json.loads(template(name).example("orders_flow"))
