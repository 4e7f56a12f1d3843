"""The PgQueuer side of bench/peers.py: the jobs it measures, and its worker process.

    python bench/peers_pgqueuer.py --url URL --job noop [--batch-size N]
        [--max-concurrent-tasks N] [--loop uvloop|asyncio] [--driver psycopg|asyncpg]
        [--first-call F] [--calls F]

The worker is what PgQueuer's docs show: a ``QueueManager`` over ``AsyncpgDriver`` on one asyncpg
connection (what ``pgq`` picks when asyncpg is installed), with the job's entrypoint registered at its defaults, run by
``pgqueuer.run(factory)`` (the programmatic twin of ``pgq run``: SIGTERM/SIGINT stop it
gracefully). ``QueueManager.run`` keeps its defaults (batch_size=10, no concurrency cap,
dequeue_timeout 30 s, heartbeat_timeout 30 s) unless ``--batch-size`` or
``--max-concurrent-tasks`` is given. The event loop is uvloop by default, as ``pgq run`` picks it
whenever it is installed (it is a dependency of pgqueuer on Linux); ``--loop asyncio`` gives the
standard loop, as ``asyncio.run(pgqueuer.run(...))`` would. ``--driver psycopg`` puts the
QueueManager on one psycopg ``AsyncConnection`` under ``PsycopgDriver`` instead, which listens
with psycopg's ``notifies()`` and holds the connection while it waits, so its other statements
wait for a notification or a 1 s timeout. Only PgQueuer is imported here.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pgqueuer
import psycopg
from pgqueuer.db import Driver, PsycopgDriver
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries

from peers_probe import PROBE, add_arguments


async def noop(job: Job) -> None:
    now = time.time()
    if PROBE.armed:
        PROBE.hit(now, int(job.payload or b"0"))


async def nap(job: Job) -> None:
    await asyncio.sleep(float(job.payload or b"0"))


#: the benchmark's job names, and the entrypoint each one is on PgQueuer
ENTRYPOINTS = {"noop": noop, "nap": nap}


def payload(value: float) -> bytes:
    """A job's payload: the sample number, or for ``nap`` the seconds to sleep."""
    return repr(value).encode()


@asynccontextmanager
async def connected(driver: str, url: str) -> AsyncIterator[Driver]:
    """One connection under a PgQueuer driver, as its docs set them up."""
    if driver == "asyncpg":
        import asyncpg
        from pgqueuer.db import AsyncpgDriver

        dsn = psycopg.conninfo.conninfo_to_dict(url)
        connection = await asyncpg.connect(
            host=dsn.get("host"), port=dsn.get("port"), user=dsn.get("user"),
            password=dsn.get("password"), database=dsn.get("dbname"),
        )  # fmt: skip
        try:
            yield AsyncpgDriver(connection)
        finally:
            await connection.close()
        return
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        yield PsycopgDriver(conn)


def event_loop_runner(loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    if loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--batch-size", type=int, help="QueueManager.run(batch_size=)")
    parser.add_argument("--max-concurrent-tasks", type=int, help="(max_concurrent_tasks=)")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--driver", choices=["psycopg", "asyncpg"], default="asyncpg")
    args = parser.parse_args()
    PROBE.configure(args.first_call, args.calls)

    @asynccontextmanager
    async def factory() -> AsyncIterator[QueueManager]:
        async with connected(args.driver, args.url) as driver:
            manager = QueueManager(Queries(driver))
            manager.entrypoint(args.job)(ENTRYPOINTS[args.job])
            yield manager

    options: dict[str, Any] = {}
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if args.max_concurrent_tasks is not None:
        options["max_concurrent_tasks"] = args.max_concurrent_tasks
    event_loop_runner(args.loop)(pgqueuer.run(factory, **options))


if __name__ == "__main__":
    main()
