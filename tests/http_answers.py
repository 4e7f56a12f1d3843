"""A local HTTP server that gives scripted answers, for the templates that call HTTP services
(webhook delivery, map_reduce's fetches): real requests through urllib, no network."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answers:
    """The server's script: each request takes the next ``(status, headers, body)`` (the last
    one repeats); what it received is kept in ``received``."""

    url: str
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def answer(self, status: int, body: str = "", **headers: str) -> Answers:
        self.script.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, body))
        return self


@contextlib.contextmanager
def http_answers() -> Iterator[Answers]:
    """``with http_answers() as server: server.answer(503).answer(200, "ok")``."""
    lock = threading.Lock()
    answers = Answers(url="")

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                answers.received.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
                index = min(len(answers.received), len(answers.script)) - 1
                status, headers, text = answers.script[index] if answers.script else (200, {}, "")
            data = text.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = handle_one

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    answers.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
