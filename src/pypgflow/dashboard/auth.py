"""Deny by default: every page and API call needs the dashboard's token, and every action a
proof that it was asked for by one of the dashboard's own pages.

A client proves it has the token either by sending it (``Authorization: Bearer TOKEN``: scripts,
the API) or with the session cookie that logging in sets (browsers: ``/login?token=TOKEN``, the
link printed at start, or the login form). The cookie holds an HMAC of the token, never the
token itself, and is ``HttpOnly`` and ``SameSite=Strict``. A browser sends a cookie with any
request to its site, whoever made the page that sends it, so an action (a POST) carried by the
cookie must also carry the CSRF token that only the dashboard's pages hold (a form field
``csrf_token`` or an ``X-CSRF-Token`` header): SameSite alone is not enough (older browsers,
sibling subdomains). A bearer token is never sent by a browser on its own: it needs no more.

:class:`Guard` is the ASGI middleware that says all this in one place, before any route runs,
and adds the headers that keep the pages to themselves (no framing, no inline scripts, no
referrer carrying a token away).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "pypgflow_dashboard"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: paths served without credentials: the login page and the static files (no data in either)
PUBLIC_PREFIXES = ("/login", "/static/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: a POST body read to find its CSRF field: forms of run ids, never larger than this
MAX_BODY = 1 << 20
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    """A random token, for a dashboard started without one."""
    return secrets.token_urlsafe(24)


class Credentials:
    """The token, and what is derived from it: the session cookie's value, the CSRF token."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the dashboard needs a non-empty token")
        self.token = token
        self.session = self._derive(b"session")
        self.csrf = self._derive(b"csrf")

    def _derive(self, purpose: bytes) -> str:
        return hmac.new(
            self.token.encode(), b"pypgflow-dashboard:" + purpose, hashlib.sha256
        ).hexdigest()

    def token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def session_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.session.encode())

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Guard:
    """The ASGI middleware in front of every route: credentials, CSRF, security headers.

    It records how the request was authenticated in ``scope["state"]["auth"]`` (``"bearer"``
    or ``"cookie"``) for the routes."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        path = route_path(scope)
        if path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        api = path.startswith("/api/") or path == "/api"
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() != "bearer" or not self.credentials.token_ok(given.strip()):
                await _refuse(send, 401, "wrong token in the Authorization header", api=True)
                return
            auth = "bearer"
        elif self.credentials.session_ok(_cookies(headers).get(COOKIE)):
            auth = "cookie"
        elif api:
            await _refuse(
                send,
                401,
                "this API needs the dashboard's token: Authorization: Bearer TOKEN",
                api=True,
            )
            return
        else:
            target = path + (
                "?" + scope["query_string"].decode() if scope.get("query_string") else ""
            )
            await _redirect(send, root_of(scope) + "/login?next=" + quote(target, safe=""))
            return
        scope.setdefault("state", {})["auth"] = auth
        if scope.get("method", "GET") not in SAFE_METHODS and auth == "cookie":
            body = await _read_body(receive)
            if body is None:
                await _refuse(send, 413, "request body too large", api=api)
                return
            if not self._csrf_in(headers, body):
                await _refuse(
                    send,
                    403,
                    "missing or wrong CSRF token: act from the dashboard's pages",
                    api=api,
                )
                return
            receive = _replay(body)
        await self.app(scope, receive, send)

    def _csrf_in(self, headers: dict[str, str], body: bytes) -> bool:
        if self.credentials.csrf_ok(headers.get(CSRF_HEADER)):
            return True
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            fields = parse_qs(body.decode("utf-8", "replace"))
            values = fields.get(CSRF_FIELD)
            return self.credentials.csrf_ok(values[0] if values else None)
        return False


def root_of(scope: Scope) -> str:
    """Where the dashboard is mounted (``/ops`` under ``Mount("/ops", ...)``; ``""`` at the
    root): what every path it sends to the browser starts with."""
    return str(scope.get("root_path", "")).rstrip("/")


def route_path(scope: Scope) -> str:
    """The request's path within the dashboard (``/runs`` of ``/ops/runs``)."""
    path, root = str(scope.get("path", "")), root_of(scope)
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found.setdefault(name, value)
    return found


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            message["headers"] = [
                *message.get("headers", []),
                *((k, v) for k, v in SECURITY_HEADERS if k not in present),
            ]
        await send(message)

    return sending


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def _refuse(send: Send, status: int, message: str, *, api: bool) -> None:
    if api:
        body = json.dumps({"error": message}).encode()
        content_type = b"application/json"
    else:
        body = message.encode()
        content_type = b"text/plain; charset=utf-8"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="pypgflow"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, location: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
