"""Every I/O call has an ``_async`` twin that behaves like it, usable from one event loop,
worker included."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable

import pytest

from pypgflow import Backoff, RunCancelled, Workflow, WorkflowFailed
from pypgflow.app import App, Job, Run
from pypgflow.status import RunStatus

pytestmark = pytest.mark.timeout(30)

IO_METHODS = {
    App: [
        "migrate",
        "start",
        "start_many",
        "get_run",
        "run",
        "list_runs",
        "cancel",
        "retry",
        "instances",
        "run_worker",
    ],
    Run: ["status", "result", "info", "cancel", "retry"],
    Job: ["enqueue"],
}


@pytest.mark.parametrize("cls", list(IO_METHODS), ids=lambda c: c.__name__)
def test_every_io_method_has_an_async_twin(cls: type) -> None:
    for name in IO_METHODS[cls]:
        twin = getattr(cls, f"{name}_async", None)
        assert twin is not None, f"{cls.__name__}.{name} has no {name}_async"
        assert inspect.iscoroutinefunction(twin), f"{cls.__name__}.{name}_async is not async"


def test_a_whole_life_cycle_on_one_event_loop(make_app: Callable[..., App]) -> None:
    flow = Workflow("async-life", backoff=Backoff(base=0.01, factor=2, jitter=0))
    broken = {"yes": True}

    @flow.step
    async def double(input: int) -> int:
        await asyncio.sleep(0)
        return input * 2

    @flow.step(max_attempts=1)
    def check(double: int) -> int:
        if broken["yes"] and double > 10:
            raise ValueError("too big")
        return double

    app = make_app(flow)

    async def scenario() -> None:
        assert await app.migrate_async() == []
        worker = asyncio.create_task(
            app.run_worker_async(poll_interval=0.2, install_signal_handlers=False)
        )
        try:
            run = await app.start_async(flow, 2)
            assert await run.result_async(timeout=5) == 4
            assert await run.status_async() is RunStatus.COMPLETED
            assert (await run.info_async()).output == 4
            assert await app.run_async(run.id) == run

            many = await app.start_many_async(flow, [1, 3])
            assert [await r.result_async(timeout=5) for r in many] == [2, 6]

            bad = await app.start_async(flow, 50)
            with pytest.raises(WorkflowFailed, match="too big"):
                await bad.result_async(timeout=5)
            assert [r.id for r in await app.list_runs_async(status="failed")] == [bad.id]
            broken["yes"] = False
            assert await bad.retry_async() is True
            assert await bad.result_async(timeout=5) == 100

            later = await app.start_async(flow, 1, delay=60)
            assert await later.cancel_async() is True
            with pytest.raises(RunCancelled):
                await later.result_async(timeout=1)
            assert (await app.get_run_async(later.id)).status is RunStatus.CANCELLED
            assert [i.instance_id for i in await app.instances_async()] == [app.instance_id]
            with pytest.raises(TimeoutError):
                await (await app.start_async(flow, 1, delay=60)).result_async(timeout=0.2)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    asyncio.run(scenario())
    # The cancelled worker deregistered itself.
    assert app.instances() == []
