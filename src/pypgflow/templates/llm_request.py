"""The LLM request pipeline: receive -> select_model -> call_model -> publish.

``call_model`` is where a model provider is called, with retries that respect its rate limits:
an exception carrying HTTP 429 (or a ``...RateLimit...`` class) with a ``Retry-After`` becomes
:class:`~pypgflow.RetryAfter`, so the next attempt waits exactly that long (in the database,
for durable runs); other transient failures (5xx, timeouts, lost connections) are retried with
the backoff; a request the provider refuses (400, 401, 403, 404, 422, ...) fails at once
(:class:`~pypgflow.errors.RequestRejected`, a ``NonRetryable``). The provider is a function you
pass; the default, :class:`FakeModel`, answers without any network, for demos and tests.

    from pypgflow.templates import llm_request_workflow

    flow = llm_request_workflow(
        lambda request: client.complete(model=request["model"], prompt=request["prompt"])
    )
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.errors import InvalidArgument, NonRetryable, RetryAfter
from pypgflow.templates.http import translate
from pypgflow.workflow import Workflow

#: what a request is: a dict with a "prompt", and whatever else the caller sends along
Request = dict[str, Any]
ModelCall = Callable[[Request], Any]

#: five attempts, 1 s, 2 s, 4 s, 8 s apart (rate limits wait what the provider says instead)
DEFAULT_BACKOFF = Backoff(base=1.0, factor=2.0, max=60.0, jitter=0.1)


class InvalidRequest(NonRetryable):
    """The request cannot be sent: no prompt, or one that is not text."""


class FakeRateLimitError(Exception):
    """What :class:`FakeModel` raises to simulate a provider's rate limit: shaped like the SDKs'
    errors (``status_code`` 429, a ``Retry-After``), so it takes the path real ones take."""

    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429 Too Many Requests: retry after {retry_after:g} s")
        self.retry_after = retry_after


class FakeModel:
    """A model that needs no network: it answers ``"[MODEL] PROMPT"``. A request with
    ``"simulate": "rate_limit"`` is refused with a 429 the first time this process sees its
    prompt (then answered); ``"simulate": "bad_request"`` always gets a 400. For demos and
    tests only: what it remembers lives in this process."""

    def __init__(self, retry_after: float = 0.5) -> None:
        self.retry_after = retry_after
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> str:
        simulate = request.get("simulate")
        if simulate == "bad_request":
            raise FakeBadRequest(f"400 Bad Request: model {request['model']!r} refused it")
        if simulate == "rate_limit":
            with self._lock:
                first = request["prompt"] not in self._seen
                self._seen.add(request["prompt"])
            if first:
                raise FakeRateLimitError(self.retry_after)
        return f"[{request['model']}] {request['prompt']}"


class FakeBadRequest(Exception):
    """What :class:`FakeModel` raises for a request a provider would refuse (HTTP 400)."""

    status_code = 400


def choose_model(request: Request) -> str:
    """The default model choice: the request's own ``"model"``, else ``"large"`` for prompts
    over 200 characters and ``"small"`` for the others."""
    model = request.get("model")
    if isinstance(model, str) and model:
        return model
    return "large" if len(request["prompt"]) > 200 else "small"


def publish_result(result: Request) -> Request:
    """The default publication: the result as it is (the run's output). Replace it with a
    write to your database, a message on a queue, a callback."""
    return result


def llm_request_workflow(
    call_model: ModelCall | None = None,
    *,
    name: str = "llm_request",
    select_model: Callable[[Request], str] | None = None,
    publish: Callable[[Request], Any] | None = None,
    max_attempts: int = 5,
    backoff: Backoff = DEFAULT_BACKOFF,
    timeout: float = 120.0,
) -> Workflow:
    """The pipeline as a :class:`~pypgflow.Workflow` named ``name``; its input is a request
    ``{"prompt": "...", ...}`` and its output what ``publish`` returns.

    ``call_model(request)`` gets the request with its ``"model"`` chosen by
    ``select_model(request)`` and returns the completion (any JSON value). Its exceptions are
    judged by :func:`pypgflow.templates.http.translate`: rate limits wait their
    ``Retry-After``, refusals fail at once, the rest is retried with ``backoff``, for at most
    ``max_attempts`` attempts of ``timeout`` seconds each.
    """
    model_call: ModelCall = call_model if call_model is not None else FakeModel()
    chooser = select_model or choose_model
    publisher = publish or publish_result
    for label, value in (("call_model", model_call), ("select_model", chooser),
                         ("publish", publisher)):  # fmt: skip
        if not callable(value):
            raise InvalidArgument(
                f"llm_request_workflow: {label} must be a function, got {value!r}"
            )

    flow = Workflow(name, timeout=30.0)

    @flow.step(name="receive", max_attempts=1)
    def receive(input: Any) -> Request:
        if not isinstance(input, dict):
            raise InvalidRequest(f"a request is an object with a prompt, got {input!r}")
        prompt = input.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest("the request has no prompt (a non-empty string)")
        return {**input, "prompt": prompt.strip()}

    @flow.step(name="select_model")
    def select(request: Request) -> Request:
        return {**request, "model": chooser(request)}

    @flow.step(name="call_model", max_attempts=max_attempts, backoff=backoff, timeout=timeout)
    def call(request: Request, ctx: StepContext) -> Request:
        ctx.logger.info("calling model %s (attempt %d)", request["model"], ctx.attempt)
        try:
            completion = model_call(request)
        except (RetryAfter, NonRetryable):
            raise
        except Exception as exc:
            judged = translate(exc, what=f"model {request['model']!r}")
            if judged is exc:
                raise
            raise judged from exc
        return {**request, "completion": completion}

    @flow.step(name="publish")
    def publish_step(result: Request) -> Any:
        return publisher(result)

    return flow.validate()


#: the input of the starter's first run (``$module``: the starter module's name)
EXAMPLE = '{"prompt": "What is a saga?"}'

STARTER = '''\
"""An LLM request pipeline, from `pypgflow new llm_request`: receive -> select_model ->
call_model -> publish, with rate-limit-aware retries.

    pypgflow migrate --app $module:app
    pypgflow worker $module:app
    pypgflow start $module:app llm_request --input '{"prompt": "What is a saga?"}' --wait

Replace call_model with your provider's client: raise its exceptions as they come (a 429 with
Retry-After waits that long, a 400 fails at once, the rest is retried with backoff).
"""

from typing import Any

from pypgflow import App
from pypgflow.templates import llm_request_workflow
from pypgflow.templates.llm_request import FakeModel

# PYPGFLOW_DATABASE_URL if set, else the SQLite file pypgflow.db in the working directory.
app = App()

fake = FakeModel()  # no network: "[small] PROMPT"


def call_model(request: dict[str, Any]) -> Any:
    # e.g. return client.responses.create(model=request["model"], input=request["prompt"]).output_text
    return fake(request)


def select_model(request: dict[str, Any]) -> str:
    return request.get("model") or ("large" if len(request["prompt"]) > 200 else "small")


def publish(result: dict[str, Any]) -> dict[str, Any]:
    return {"model": result["model"], "completion": result["completion"]}


flow = app.register(llm_request_workflow(call_model, select_model=select_model, publish=publish))
'''
