"""What an HTTP answer, or an HTTP client's exception, means for a retry: shared by the
templates that talk to other services (``llm_request``, ``webhook``, ``map_reduce``).

The rules are the ones providers document: a 2xx succeeded; a 429 (rate limited) or a 5xx
may succeed later, after the ``Retry-After`` it names when it names one (:class:`RetryAfter`),
else after the step's backoff (:class:`HTTPStatusError`); a 408 too; any other 4xx is the
request's fault and no retry changes it (:class:`RequestRejected`, a ``NonRetryable``).
Exceptions of client libraries are read by duck typing, so that the SDKs of model providers
(whose errors carry ``status_code`` and a ``response`` with headers) and urllib's
``HTTPError`` (``code``, ``headers``) are judged alike without being imported here.
"""

from __future__ import annotations

import email.utils
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pypgflow.errors import HTTPStatusError, RequestRejected, RetryAfter

#: answers worth another attempt besides the 5xx
RETRYABLE = frozenset({408, 429})


@dataclass(frozen=True)
class Response:
    """What an HTTP call answered: the status, the headers (names in lower case), the body."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers.get("retry-after"))


def retry_after_seconds(value: object) -> float | None:
    """A ``Retry-After`` value as seconds from now: a number of seconds, or an HTTP date;
    None when absent or unreadable (the step's backoff then applies)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def judge(status: int, retry_after: float | None = None, *, what: str = "the request") -> None:
    """Nothing for a 2xx; else the exception saying what the answer means for a retry."""
    if 200 <= status < 300:
        return
    if status in RETRYABLE or status >= 500:
        if retry_after is not None:
            raise RetryAfter(retry_after, f"{what}: HTTP {status}, retry after {retry_after:g} s")
        raise HTTPStatusError(f"{what}: HTTP {status}", status=status)
    raise RequestRejected(f"{what}: HTTP {status}, not retried", status=status)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception of a client library carries, if any."""
    for owner in (exc, getattr(exc, "response", None)):
        for attribute in ("status_code", "status", "code"):
            value = getattr(owner, attribute, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
                return value
    return None


def retry_after_of(exc: BaseException) -> float | None:
    """The delay an exception asks for: its ``retry_after``, else the ``Retry-After`` header of
    its headers or of its response's."""
    own = retry_after_seconds(getattr(exc, "retry_after", None))
    if own is not None:
        return own
    for owner in (exc, getattr(exc, "response", None)):
        headers = getattr(owner, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            found = retry_after_seconds(headers.get("retry-after") or headers.get("Retry-After"))
            if found is not None:
                return found
    return None


def translate(exc: BaseException, *, what: str = "the request") -> BaseException:
    """The exception a step should raise for ``exc``, an HTTP client's: a status is judged as
    :func:`judge` does (a rate limit with a delay becomes :class:`RetryAfter`); an exception
    without one that says it is a rate limit (its class name has ``RateLimit``) and names a
    delay becomes :class:`RetryAfter` too; anything else is itself (retried with backoff)."""
    status = status_of(exc)
    delay = retry_after_of(exc)
    if status is None:
        if "ratelimit" in type(exc).__name__.lower() and delay is not None:
            return RetryAfter(delay, f"{what}: rate limited, retry after {delay:g} s ({exc})")
        return exc
    try:
        judge(status, delay, what=what)
    except (HTTPStatusError, RetryAfter) as judged:
        return judged
    return exc  # a "success" status on an exception: nothing to say about it


def urllib_request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP call with the standard library, under ``timeout`` seconds: the answer, whatever
    its status (a connection that fails or times out raises ``OSError``, which is retried)."""
    if not url.startswith(("http://", "https://")):
        raise RequestRejected(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(  # noqa: S310  http(s) only: checked just above
        url, data=body, headers=dict(headers or {}), method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310  (above)
            return Response(
                answer.status,
                {k.lower(): v for k, v in answer.headers.items()},
                answer.read().decode("utf-8", "replace"),
            )
    except urllib.error.HTTPError as error:
        with error:
            text = error.read().decode("utf-8", "replace") if error.fp is not None else ""
        return Response(error.code, {k.lower(): v for k, v in error.headers.items()}, text)
