"""pypgflow behind PgBouncer in session pooling, as docs/how-to/postgresql.md says it works.

A PgBouncer of the test's own, on a free port of the loopback, pools the test database in session
mode; an App goes through it for everything: migrations, starts (one at a time, each statement
prepared on first use; a batch of runs that start alike, in one statement; a batch of runs of a
root map step, streamed by COPY), the worker's claims and outcomes, and the LISTEN connections
that wake the worker and the waiting caller. Skipped
where pgbouncer is not installed (`apt-get install pgbouncer`; .ci/run installs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from pypgflow import App, Workflow
from tests.conftest import running_worker

PGBOUNCER = shutil.which("pgbouncer")
pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def pgbouncer(database_url: str, pool_mode: str, directory: Path) -> Iterator[str]:
    """A PgBouncer process pooling ``database_url`` in ``pool_mode``; yields the URL through it."""
    assert PGBOUNCER is not None
    server = psycopg.conninfo.conninfo_to_dict(database_url)
    port = _free_port()
    target = " ".join(
        f"{key}={server[key]}" for key in ("host", "port", "user", "dbname") if server.get(key)
    )
    config = directory / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n{server['dbname']} = {target}\n\n[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = {pool_mode}\nmax_client_conn = 100\n"
        "default_pool_size = 20\n",
        encoding="utf-8",
    )
    command = [PGBOUNCER]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        try:
            command += ["-u", pwd.getpwnam("postgres").pw_name]
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' user for PgBouncer")
    log = directory / "pgbouncer.log"
    with log.open("w") as output:
        process = subprocess.Popen([*command, str(config)], stdout=output, stderr=output)
    url = f"postgresql://{server.get('user', 'postgres')}@127.0.0.1:{port}/{server['dbname']}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, connect_timeout=1).close()
                break
            except psycopg.OperationalError:
                assert process.poll() is None, f"pgbouncer exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"pgbouncer did not answer: {log.read_text()}"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _flow() -> Workflow:
    flow = Workflow("pooled")

    @flow.step
    def add_one(n: int) -> int:
        return n + 1

    @flow.step
    def double(n: int) -> int:
        return n * 2

    return flow


@pytest.mark.timeout(60)
def test_everything_works_through_a_session_pooled_pgbouncer(pg_url: str, tmp_path: Path) -> None:
    with pgbouncer(pg_url, "session", tmp_path) as pooled_url:
        each = Workflow("pooled-map")
        each.map(over=None, name="triple")(lambda n: n * 3)
        app = App(pooled_url, workflows=[_flow(), each])
        try:
            app.migrate()
            # poll_interval 1 s: without its LISTEN, each run would wait for the worker's poll and
            # for the caller's own look at its run (every second), about a second a run
            with running_worker(app, poll_interval=1.0):
                began = time.monotonic()
                results = [app.start("pooled", n).result(timeout=10) for n in range(30)]
                one_by_one = time.monotonic() - began
                batch = app.start_many("pooled", list(range(200)))  # one statement
                batch_results = [run.result(timeout=30) for run in batch]
                mapped = app.start_many("pooled-map", [[n] for n in range(100)])  # by COPY
                mapped_results = [run.result(timeout=30) for run in mapped]
        finally:
            app.close()
    assert results == [(n + 1) * 2 for n in range(30)]
    assert batch_results == [(n + 1) * 2 for n in range(200)]
    assert mapped_results == [[n * 3] for n in range(100)]
    assert one_by_one < 10, f"30 runs took {one_by_one:.1f} s: notifications did not arrive"
