"""`pypgflow dashboard`: its help, and a real server that prints the login link with a token it
made (or none, when given one) and lets that link in."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.cli.conftest import SAMPLE, Invoke


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``pypgflow ARGS`` in a process of its own, until its login link is printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pypgflow.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl+C" in line:
                break
        yield process, lines
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except urllib.error.URLError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_help_shows_examples(cli: Invoke) -> None:
    result = cli("dashboard", "--help")
    assert result.exit_code == 0
    for words in ("--token", "--read-only", "--host", "--port", "PYPGFLOW_DASHBOARD_TOKEN",
                  "pypgflow --database-url sqlite:///pypgflow-demo.db dashboard"):  # fmt: skip
        assert words in result.stdout


@pytest.mark.timeout(60)
def test_a_random_token_is_printed_in_the_login_link(pg_url: str) -> None:
    port = free_port()
    env = {"PYPGFLOW_DASHBOARD_TOKEN": ""}
    with serving("--database-url", pg_url, "dashboard", "--port", str(port), env=env) as (_, lines):
        link = next(line.strip() for line in lines if "/login?token=" in line)
        token = link.split("token=", 1)[1]
        assert link.startswith(f"http://127.0.0.1:{port}/login?token=")
        assert len(token) >= 24
        assert fetch(f"http://127.0.0.1:{port}/api/runs")[0] == 401
        status, body = fetch(
            f"http://127.0.0.1:{port}/api/runs", {"Authorization": f"Bearer {token}"}
        )
        assert status == 200
        assert '"runs":[]' in body
        status, page = fetch(link)  # follows the redirect with the cookie it set
        assert status == 200
        assert "Overview" in page


@pytest.mark.timeout(60)
def test_a_given_token_is_not_printed(pg_url: str) -> None:
    port = free_port()
    env = {"PYPGFLOW_DATABASE_URL": pg_url, "PYPGFLOW_DASHBOARD_TOKEN": "s3cret-token"}
    with serving("dashboard", SAMPLE, "--port", str(port), "--read-only", env=env) as (_, lines):
        output = "".join(lines)
        assert "s3cret-token" not in output
        assert "read-only" in output
        assert f"http://127.0.0.1:{port}/" in output
        status, body = fetch(
            f"http://127.0.0.1:{port}/api/workflows", {"Authorization": "Bearer s3cret-token"}
        )
        assert status == 200
        assert '"name":"hello"' in body
