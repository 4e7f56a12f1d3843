"""What an HTTP answer or a client's exception means for a retry (pypgflow.templates.http), and
the urllib call the templates make by default, against a local server."""

from __future__ import annotations

import email.utils
import urllib.error
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pypgflow import NonRetryable, RetryAfter
from pypgflow.errors import HTTPStatusError, RequestRejected
from pypgflow.templates.http import (
    judge,
    retry_after_of,
    retry_after_seconds,
    status_of,
    translate,
    urllib_request,
)
from tests.http_answers import http_answers

pytestmark = pytest.mark.timeout(30)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds(3) == 3.0
    assert retry_after_seconds("-4") == 0.0
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 115 <= (retry_after_seconds(later) or 0) <= 120
    for unreadable in (None, "", "soon", "nan", True):
        assert retry_after_seconds(unreadable) is None


def test_judge_tells_success_retry_and_refusal_apart() -> None:
    for ok in (200, 201, 204, 299):
        judge(ok)  # nothing raised
    with pytest.raises(RetryAfter) as waited:
        judge(429, 12.0, what="POST x")
    assert waited.value.delay == 12.0
    assert "POST x: HTTP 429" in waited.value.message
    for transient in (429, 408, 500, 502, 503):
        with pytest.raises(HTTPStatusError) as caught:
            judge(transient)
        assert caught.value.status == transient
        assert not isinstance(caught.value, NonRetryable)
    for refused in (400, 401, 403, 404, 410, 422):
        with pytest.raises(RequestRejected) as rejected:
            judge(refused, 5.0)  # a delay changes nothing for a refusal
        assert isinstance(rejected.value, NonRetryable)
        assert rejected.value.status == refused


class SdkRateLimitError(Exception):
    """Shaped like a model provider SDK's error: a status code and a response with headers."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"Error code: {status}")
        self.status_code = status

        class Response:
            pass

        self.response: Any = Response()
        self.response.headers = headers


def test_translate_reads_client_exceptions_by_their_shape() -> None:
    limited = SdkRateLimitError(429, {"retry-after": "20"})
    assert (status_of(limited), retry_after_of(limited)) == (429, 20.0)
    judged = translate(limited, what="model")
    assert isinstance(judged, RetryAfter)
    assert judged.delay == 20.0

    assert isinstance(translate(SdkRateLimitError(429, {})), HTTPStatusError)
    assert isinstance(translate(SdkRateLimitError(400, {})), RequestRejected)
    assert isinstance(translate(SdkRateLimitError(503, {"Retry-After": "2"})), RetryAfter)

    class RateLimitReached(Exception):  # no status, but says what it is and how long to wait
        retry_after = 4

    assert isinstance(translate(RateLimitReached()), RetryAfter)
    plain = ConnectionResetError("reset")
    assert translate(plain) is plain  # retried with the backoff, as it is

    http_error = urllib.error.HTTPError("http://x", 404, "Not Found", {}, None)  # type: ignore[arg-type]
    assert isinstance(translate(http_error), RequestRejected)


def test_urllib_request_returns_every_status_with_its_headers() -> None:
    with http_answers() as server:
        server.answer(200, "hello").answer(503, "busy", retry_after="3").answer(404, "gone")
        ok = urllib_request("POST", server.url + "/a", body=b'{"x":1}', headers={"X-A": "b"})
        busy = urllib_request("GET", server.url + "/b")
        gone = urllib_request("GET", server.url + "/c")
    assert (ok.status, ok.body) == (200, "hello")
    assert (busy.status, busy.body, busy.retry_after) == (503, "busy", 3.0)
    assert (gone.status, gone.body) == (404, "gone")
    first = server.received[0]
    assert (first.method, first.path, first.body) == ("POST", "/a", b'{"x":1}')
    assert first.headers["X-A"] == "b"


def test_urllib_request_refuses_other_schemes_and_times_out() -> None:
    with pytest.raises(RequestRejected, match="not an http"):
        urllib_request("GET", "file:///etc/passwd")
    with pytest.raises(OSError, match=r"refused|unreachable|timed out"):  # retried
        urllib_request("GET", "http://127.0.0.1:9/", timeout=2)
