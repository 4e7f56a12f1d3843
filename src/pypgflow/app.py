"""App: what users touch to run workflows durably. Start runs, query them, cancel, retry, work.

The App validates everything before it writes (JSON inputs, options, known workflows), asks
orchestration to build each run, and hands the result to its engine. It holds no SQL.

Why one module: the App and the two handles it returns (:class:`Run`, :class:`Job`) are one public
face, and every public method has an ``_async`` twin, which doubles the length without adding a
responsibility. Preparing a start (:mod:`pypgflow.starting`) and waiting for a result
(:mod:`pypgflow.results`) live in their own modules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from pypgflow import defaults, observing
from pypgflow.backoff import Backoff
from pypgflow.catalog import Catalog
from pypgflow.cron import Schedule, check_cron, check_timezone
from pypgflow.engines import engine_for_url
from pypgflow.engines.base import Engine
from pypgflow.engines.starts import StartRequest
from pypgflow.errors import (
    ConfigurationError,
    InvalidArgument,
    NotSupported,
    RunNotFound,
    UnknownWorkflow,
)
from pypgflow.events import Events, Handler
from pypgflow.ids import SHOWN_MATCHES, one_run_id
from pypgflow.insight import check_limit
from pypgflow.leader import LEADER_LEASE
from pypgflow.limits import RateLimit, check_capacity, check_period
from pypgflow.records import InstanceInfo, RunInfo, ScheduleInfo
from pypgflow.registry import default_instance_id
from pypgflow.results import ResultWaiters
from pypgflow.serialization import dumps
from pypgflow.starting import check_queue, prepare_fork, prepare_start, prepare_starts
from pypgflow.status import RunStatus
from pypgflow.workflow import Workflow, check_signal_name, children_of

P = ParamSpec("P")
R = TypeVar("R")


class Run:
    """A handle on a started run: its id, and ways to wait for it or act on it."""

    __slots__ = ("app", "id")

    def __init__(self, app: App, run_id: str) -> None:
        self.app = app
        self.id = run_id

    def __repr__(self) -> str:
        return f"Run({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> RunStatus:
        result = self.app.engine.run_result(self.id)
        if result is None:
            raise RunNotFound(f"no run with id {self.id}")
        return result.status

    async def status_async(self) -> RunStatus:
        return await asyncio.to_thread(self.status)

    def info(self) -> RunInfo:
        return self.app.get_run(self.id)

    def result(self, timeout: float | None = 10.0) -> Any:
        """Wait for the run to finish and return its result.

        Raises WorkflowFailed (with every attempt's error) if it failed, RunCancelled if it was
        cancelled, ResultTimeout (a TimeoutError) if it is still going after ``timeout`` seconds.
        The wait is woken by the engine's announcement that the run finished (see
        :mod:`pypgflow.results`), not by polling.
        """
        return self.app._waiters.wait(self.id, timeout, self.app.workflows)

    async def result_async(self, timeout: float | None = 10.0) -> Any:
        return await self.app._waiters.wait_async(self.id, timeout, self.app.workflows)

    async def info_async(self) -> RunInfo:
        return await self.app.get_run_async(self.id)

    def cancel(self) -> bool:
        return self.app.cancel(self.id)

    async def cancel_async(self) -> bool:
        return await self.app.cancel_async(self.id)

    def retry(self) -> bool:
        return self.app.retry(self.id)

    def signal(self, name: str, data: Any = None) -> str | None:
        """Send this run the signal ``name`` (see :meth:`App.signal`)."""
        return self.app.signal(self.id, name, data)

    async def signal_async(self, name: str, data: Any = None) -> str | None:
        return await self.app.signal_async(self.id, name, data)

    async def retry_async(self) -> bool:
        return await self.app.retry_async(self.id)


class Job(Generic[P, R]):
    """A plain background job: a one-step workflow. Call it to run the function here, now;
    ``enqueue`` to run it durably on a worker."""

    def __init__(self, app: App, fn: Callable[P, R], workflow: Workflow, queue: str) -> None:
        self.app = app
        self.fn = fn
        self.workflow = workflow
        self.queue = queue
        self.__name__ = getattr(fn, "__name__", workflow.name)
        self.__doc__ = fn.__doc__

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def enqueue(self, args: Any = None, **options: Any) -> Run:
        """Start the job durably; ``options`` are those of ``App.start`` (queue, delay, ...)."""
        return self.app.start(self.workflow, args, **options)

    async def enqueue_async(self, args: Any = None, **options: Any) -> Run:
        return await self.app.start_async(self.workflow, args, **options)


class App:
    """Durable workflows on a database: ``App("postgresql://...")`` or ``App("sqlite:///f.db")``;
    ``App()`` reads ``PYPGFLOW_DATABASE_URL`` and falls back to ``sqlite:///pypgflow.db`` in the
    working directory. Safe to share between threads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        workflows: Iterable[Workflow] = (),
        schema: str = defaults.DEFAULT_SCHEMA,
        instance_id: str | None = None,
        engine: Engine | None = None,
        stale_after: float = defaults.DEFAULT_STALE_AFTER,
    ) -> None:
        if engine is None:
            if url is None:
                url = os.environ.get(defaults.DATABASE_URL_ENV) or defaults.DEFAULT_URL
            if not url:
                raise ConfigurationError(
                    "empty database URL: pass App('postgresql://user@host:5432/dbname'), "
                    f"App('sqlite:///flows.db'), or App() to use {defaults.DATABASE_URL_ENV} "
                    f"(default {defaults.DEFAULT_URL})"
                )
            engine = engine_for_url(url, schema=schema)
        self.engine = engine
        self.url = url
        #: this process's lifecycle events and their subscribers (see ``on``)
        self.events = Events()
        #: the callers of result() waiting, and the listener that wakes them (started lazily)
        self._waiters = ResultWaiters(engine)
        self.instance_id = instance_id or default_instance_id()
        if (
            isinstance(stale_after, bool)
            or not isinstance(stale_after, int | float)
            or not stale_after > 0
        ):
            raise InvalidArgument(
                f"stale_after must be a number of seconds > 0, got {stale_after!r}"
            )
        #: seconds without a heartbeat after which an instance is offline and its steps rescued
        self.stale_after = float(stale_after)
        #: every registered workflow version, and the stored blueprints (see pypgflow.catalog)
        self.catalog = Catalog(engine)
        #: the newest registered version of each workflow, by name
        self.workflows: dict[str, Workflow] = self.catalog.newest
        self.default_queues: dict[str, str] = {}
        self._queue_limits: dict[str, int] = {}
        self._rate_limits: dict[str, RateLimit] = {}
        #: cron schedules defined in code (app.schedule, @app.job(cron=...)), by name
        self.defined_schedules: dict[str, Schedule] = {}
        for flow in workflows:
            self.register(flow)

    def __repr__(self) -> str:
        return f"App(engine={type(self.engine).__name__}, workflows={list(self.workflows)})"

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._waiters.close()
        self.engine.close()

    # -- events --------------------------------------------------------------------------------

    def on(self, event: str, handler: Handler) -> Callable[[], bool]:
        """Call ``handler(event)`` whenever this process emits ``event`` (a name of
        :data:`pypgflow.events.EVENT_NAMES`, e.g. ``"step_failed"``, or ``"*"`` for every one);
        returns a function that unsubscribes it. Handlers run where the event happens and must
        be quick; an exception in one is logged and ignored."""
        return self.events.on(event, handler)

    def off(self, event: str, handler: Handler) -> bool:
        """Unsubscribe ``handler`` from ``event``; False if it was not subscribed."""
        return self.events.off(event, handler)

    # -- definitions ---------------------------------------------------------------------------

    def register(self, *workflows: Workflow, queue: str | None = None) -> Workflow:
        """Make these workflows known to this app: its workers run them, ``start`` accepts their
        names. Several versions of one workflow may be registered side by side (a deploy keeps
        the old one until its runs drain); the last registered is the newest, which ``start``
        uses unless ``version=`` names another. Returns the last one.

        Their blueprints are stored at once when the app has already used its database, else
        by ``migrate``, by its workers when they start, or by its first start of each (so that
        registering, done at import time, needs no database).

        ``queue`` is where their runs go when ``start`` names none (else ``"default"``).
        """
        if not workflows:
            raise InvalidArgument("register() takes one or more Workflows")
        for workflow in workflows:
            if not isinstance(workflow, Workflow):
                raise InvalidArgument(f"register() takes a Workflow, got {type(workflow).__name__}")
            workflow.validate()
        for workflow in workflows:
            self.catalog.add(workflow)
            if queue is not None:
                self.default_queues[workflow.name] = check_queue(queue)
        # the workflows they run as children: their workers must run those too
        children = [child for workflow in workflows for child in children_of(workflow)]
        for child in children:
            self.catalog.add_child(child)
        if self.engine.schema_ready:  # connected already: store their blueprints now
            self.catalog.store([*children, *workflows])
        return workflows[-1]

    @property
    def workflow_versions(self) -> Mapping[tuple[str, str], Workflow]:
        """Every registered workflow version, by (name, version)."""
        return self.catalog.versions

    def store_definitions(self) -> None:
        """Store the blueprint of every registered workflow version (graph and options, no
        code), so that processes without the code can start them: done by ``migrate`` and by
        every worker at start, and for each version the first time this process starts it."""
        self.catalog.store()

    def job(
        self,
        fn: Callable[P, R] | None = None,
        *,
        name: str | None = None,
        queue: str = defaults.DEFAULT_QUEUE,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        cron: str | None = None,
    ) -> Any:
        """Declare a background job (a one-step workflow named after the function).

        ``cron``: also start it (with input None) at every tick of this cron expression, in
        UTC; the schedule is named after the job (see ``schedule`` for time zones)."""
        if cron is not None:
            check_cron(cron)

        def decorate(func: Callable[P, R]) -> Job[P, R]:
            flow = Workflow(name or func.__name__)
            flow.step(
                name=func.__name__, max_attempts=max_attempts, timeout=timeout, backoff=backoff
            )(func)
            self.register(flow, queue=queue)
            if cron is not None:
                self.schedule(flow.name, cron, flow, queue=queue)
            return Job(self, func, flow, queue)

        return decorate(fn) if fn is not None else decorate

    def workflow(self, name_or_flow: str | Workflow, version: str | None = None) -> Workflow:
        """The workflow a start names: a Workflow (or Job) as it is, else the registered one of
        that name (the newest, or ``version``), else its stored blueprint (a workflow without
        code, which starts runs as its own code would); UnknownWorkflow if none."""
        if isinstance(name_or_flow, Workflow):
            return name_or_flow.validate()
        if isinstance(name_or_flow, Job):
            return name_or_flow.workflow
        if not isinstance(name_or_flow, str):
            raise UnknownWorkflow(f"a workflow is named by a string, got {name_or_flow!r}")
        return self.catalog.find(name_or_flow, version)

    # -- fleet-wide limits ---------------------------------------------------------------------

    def queue(self, name: str, *, concurrency: int) -> None:
        """Limit the queue ``name`` fleet-wide: at most ``concurrency`` of its tasks run at once
        across every worker of this app's code (declare it the same way in every process that
        runs workers). Tasks over the limit wait in the database, holding no slot."""
        self._queue_limits[check_queue(name)] = check_capacity(f"queue {name!r}", concurrency)

    def rate_limit(self, name: str, limit: int, *, per: float | timedelta) -> RateLimit:
        """Declare the rate limit ``name``, shared by every worker: at most ``limit`` executions
        of the steps that take it (``@flow.step(rate_limit=name)``) start in any ``per``
        seconds (a sliding window). Steps over it wait in the database, holding no slot, and
        are claimed when the window allows. Declare it the same way in every worker process."""
        where = f"rate limit {name!r}"
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidArgument(f"{where}: a rate limit is named by 1 to 200 characters")
        declared = RateLimit(
            name, check_capacity(where, limit, what="limit"), check_period(where, per)
        )
        self._rate_limits[name] = declared
        return declared

    @property
    def queue_limits(self) -> Mapping[str, int]:
        return self._queue_limits

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        return self._rate_limits

    # -- cron schedules ------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        cron: str,
        workflow: str | Workflow | Job[Any, Any],
        input: Any = None,
        *,
        queue: str | None = None,
        priority: int = defaults.DEFAULT_PRIORITY,
        timezone: str = "UTC",
    ) -> Schedule:
        """Start ``workflow`` on ``input`` at every tick of ``cron`` in ``timezone``.

        ``cron`` has five fields (minute hour day month weekday) or six, seconds last. Every
        worker of this app stores the schedule when it starts; the leader instance starts one
        run per tick, whichever instances come and go. Everything is checked here: the cron
        expression, the time zone (an IANA name), the workflow (a name must be registered; a
        Workflow is registered), the input (JSON), queue and priority.
        """
        if not isinstance(name, str) or not name or len(name) > 200:
            raise InvalidArgument(f"a schedule name must be 1 to 200 characters, got {name!r}")
        check_cron(cron)
        check_timezone(timezone)
        if isinstance(workflow, Job):
            workflow = workflow.workflow
        if isinstance(workflow, str) and workflow not in self.workflows:
            self.catalog.find(workflow)  # UnknownWorkflow naming what exists, if it does not
            raise UnknownWorkflow(
                f"workflow {workflow!r} is not registered with this app: a schedule's workflow "
                "needs its code here (register it)"
            )
        flow = self.workflow(workflow)
        known = self.workflow_versions.get((flow.name, flow.version))
        if known is not None and known is not flow:
            raise InvalidArgument(
                f"another workflow named {flow.name!r} (version {flow.version!r}) is already "
                "registered"
            )
        # checked as a start is, nothing written (a schedule is defined at import time)
        (request,) = self._request(flow, input, queue, priority, None, None, None, store=False)
        defined = Schedule(
            name=name,
            cron=cron,
            workflow=flow.name,
            input_json=request.run.input or "null",
            queue=request.run.queue,
            priority=priority,
            timezone=timezone,
        )
        existing = self.defined_schedules.get(name)
        if existing is not None and existing != defined:
            raise InvalidArgument(f"another schedule named {name!r} is already defined")
        if known is None:
            self.register(flow)
        self.defined_schedules[name] = defined
        return defined

    def schedules(self) -> list[ScheduleInfo]:
        """The schedules stored by workers (of any app on this database), with their last tick
        turned into a run and the next one due."""
        return self.engine.list_schedules()

    async def schedules_async(self) -> list[ScheduleInfo]:
        return await asyncio.to_thread(self.schedules)

    def delete_schedule(self, name: str) -> bool:
        """Delete a stored schedule (False if none has that name): one no code defines any more.
        A leader whose app still defines it stores it again, ticking from then."""
        return self.engine.delete_schedule(name)

    async def delete_schedule_async(self, name: str) -> bool:
        return await asyncio.to_thread(self.delete_schedule, name)

    # -- schema --------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Create or upgrade the database schema (idempotent), and store the registered
        workflows' blueprints; returns the schema versions applied."""
        applied = self.engine.migrate()
        self.store_definitions()
        return applied

    async def migrate_async(self) -> list[int]:
        return await asyncio.to_thread(self.migrate)

    # -- starting runs -------------------------------------------------------------------------

    def start(
        self,
        workflow: str | Workflow,
        input: Any = None,
        *,
        queue: str | None = None,
        priority: int = defaults.DEFAULT_PRIORITY,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        connection: Any = None,
        version: str | None = None,
    ) -> Run:
        """Start a run of ``workflow`` on ``input``. Nothing is written if anything is invalid.

        ``connection``: a psycopg connection whose transaction the run joins; it exists only if
        that transaction commits.
        """
        requests = self._request(
            workflow, input, queue, priority, delay, run_at, idempotency_key, version
        )
        self._check_connection(connection)
        (run_id,) = self._start_runs(requests, connection)
        return Run(self, run_id)

    async def start_async(
        self,
        workflow: str | Workflow,
        input: Any = None,
        *,
        queue: str | None = None,
        priority: int = defaults.DEFAULT_PRIORITY,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        idempotency_key: str | None = None,
        connection: Any = None,
        version: str | None = None,
    ) -> Run:
        requests = self._request(
            workflow, input, queue, priority, delay, run_at, idempotency_key, version
        )
        self._check_connection(connection)
        (run_id,) = await self._start_runs_async(requests, connection)
        return Run(self, run_id)

    def start_many(
        self,
        workflow: str | Workflow,
        inputs: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int = defaults.DEFAULT_PRIORITY,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        connection: Any = None,
        version: str | None = None,
    ) -> list[Run]:
        """Start one run per input in a single round trip; all or nothing."""
        requests = self._requests(workflow, inputs, queue, priority, delay, run_at, version)
        self._check_connection(connection)
        return [Run(self, run_id) for run_id in self._start_runs(requests, connection)]

    async def start_many_async(
        self,
        workflow: str | Workflow,
        inputs: Iterable[Any],
        *,
        queue: str | None = None,
        priority: int = defaults.DEFAULT_PRIORITY,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        connection: Any = None,
        version: str | None = None,
    ) -> list[Run]:
        requests = self._requests(workflow, inputs, queue, priority, delay, run_at, version)
        self._check_connection(connection)
        ids = await self._start_runs_async(requests, connection)
        return [Run(self, run_id) for run_id in ids]

    def _start_runs(self, requests: Sequence[StartRequest], connection: Any) -> list[str]:
        """Write the starts, told to subscribers (see pypgflow.observing)."""
        return observing.start_runs(
            self.events,
            requests,
            self.instance_id,
            lambda ready: self.engine.start_runs(ready, connection=connection),
        )

    async def _start_runs_async(
        self, requests: Sequence[StartRequest], connection: Any
    ) -> list[str]:
        return await observing.start_runs_async(
            self.events,
            requests,
            self.instance_id,
            lambda ready: self.engine.start_runs_async(ready, connection=connection),
        )

    def _check_connection(self, connection: Any) -> None:
        if connection is not None and not self.engine.supports_transactional_start:
            raise NotSupported(
                f"connection= (starting a run inside your own transaction) needs PostgreSQL; "
                f"{type(self.engine).__name__} cannot do it"
            )

    def _requests(
        self,
        workflow: str | Workflow,
        inputs: Iterable[Any],
        queue: str | None,
        priority: int,
        delay: float | timedelta | None,
        run_at: datetime | None,
        version: str | None = None,
    ) -> Sequence[StartRequest]:
        if isinstance(inputs, str | bytes | dict) or not isinstance(inputs, Iterable):
            raise InvalidArgument("start_many() takes an iterable of inputs, one per run")
        flow = self._startable(workflow, version)
        if queue is None:
            queue = self.default_queues.get(flow.name, defaults.DEFAULT_QUEUE)
        return prepare_starts(
            flow, inputs, queue=queue, priority=priority, delay=delay, run_at=run_at
        )

    def _startable(self, workflow: str | Workflow, version: str | None) -> Workflow:
        """The workflow to start, its blueprint stored first if this process has not yet (so
        that other processes can start it without its code)."""
        if version is not None and not isinstance(workflow, str):
            raise InvalidArgument("version= picks a version of a workflow named by a string")
        flow = self.workflow(workflow, version)
        if isinstance(workflow, str) and flow is not self.workflow_versions.get(
            (flow.name, flow.version)
        ):
            return flow  # from its stored blueprint: stored already
        self.catalog.ensure_stored(flow)
        return flow

    def _request(
        self,
        workflow: str | Workflow,
        input: Any,
        queue: str | None,
        priority: int,
        delay: float | timedelta | None,
        run_at: datetime | None,
        idempotency_key: str | None,
        version: str | None = None,
        *,
        store: bool = True,
    ) -> Sequence[StartRequest]:
        """A start of ``workflow`` (a name this app registers, or a Workflow), on the
        workflow's queue unless one is given, as the engines take it: prepared by
        :func:`pypgflow.starting.prepare_start` (for most workflows, a batch of one from
        the workflow's template)."""
        flow = self._startable(workflow, version) if store else self.workflow(workflow, version)
        if queue is None:
            queue = self.default_queues.get(flow.name, defaults.DEFAULT_QUEUE)
        return prepare_start(
            flow,
            input,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            idempotency_key=idempotency_key,
        )

    # -- runs ----------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunInfo:
        """A run with its steps (attempts, outputs, errors, timings, instances)."""
        info = self.engine.get_run(str(run_id))
        if info is None:
            raise RunNotFound(f"no run with id {run_id}")
        (info,) = self.with_waiting([info])
        return info

    def with_waiting(self, runs: Sequence[RunInfo]) -> list[RunInfo]:
        """``runs`` with ``waiting_for_version`` set on those unfinished that no live worker
        can run (no online instance has their workflow's version): one read of the instances,
        and none when no run is unfinished."""
        going = {r.id for r in runs if r.version is not None and not r.status.finished}
        if not going:
            return list(runs)
        live = {
            key
            for instance in self.engine.list_instances(stale_after=self.stale_after)
            if instance.status == "online"
            for key in instance.versions
        }
        return [
            dataclasses.replace(r, waiting_for_version=True)
            if r.id in going and f"{r.workflow}@{r.version}" not in live
            else r
            for r in runs
        ]

    async def get_run_async(self, run_id: str) -> RunInfo:
        return await asyncio.to_thread(self.get_run, run_id)

    def run(self, run_id: str) -> Run:
        """A handle on an existing run."""
        self.get_run(run_id)
        return Run(self, str(run_id))

    async def run_async(self, run_id: str) -> Run:
        await self.get_run_async(run_id)
        return Run(self, str(run_id))

    def resolve_run_id(self, id_or_prefix: str) -> str:
        """The id of the one run whose id is, or starts with, ``id_or_prefix`` (hex digits, as
        the command line takes them): RunNotFound if none, AmbiguousRunId if several."""
        found = self.engine.run_ids_with_prefix(id_or_prefix, limit=SHOWN_MATCHES + 1)
        return one_run_id(id_or_prefix, found)

    async def resolve_run_id_async(self, id_or_prefix: str) -> str:
        return await asyncio.to_thread(self.resolve_run_id, id_or_prefix)

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow: str | Workflow | Job[Any, Any] | None = None,
        limit: int = defaults.DEFAULT_LIST_LIMIT,
    ) -> list[RunInfo]:
        """Runs, newest first; filters take the enum or its string value (``"failed"``)."""
        if status is not None:
            try:
                status = RunStatus(status)
            except ValueError:
                choices = ", ".join(s.value for s in RunStatus)
                raise InvalidArgument(f"unknown run status {status!r} (one of {choices})") from None
        if isinstance(workflow, Job):
            workflow = workflow.workflow
        name = workflow.name if isinstance(workflow, Workflow) else workflow
        check_limit(limit)
        return self.engine.list_runs(status=status, workflow=name, limit=limit)

    async def list_runs_async(
        self,
        status: RunStatus | str | None = None,
        workflow: str | Workflow | Job[Any, Any] | None = None,
        limit: int = defaults.DEFAULT_LIST_LIMIT,
    ) -> list[RunInfo]:
        return await asyncio.to_thread(self.list_runs, status, workflow, limit)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: pending steps are cancelled, running ones see ``ctx.cancelled`` (async
        ones are cancelled). False if the run had already finished."""
        cancelled = self.engine.cancel_run(str(run_id))
        if cancelled and self.events.wants("run_cancelled"):
            info = self.engine.get_run(str(run_id))
            observing.run_cancelled(
                self.events, str(run_id), info.workflow if info else None, self.instance_id
            )
        return cancelled

    async def cancel_async(self, run_id: str) -> bool:
        return await asyncio.to_thread(self.cancel, run_id)

    def fork(self, run_id: str, from_step: str, input: Any = None) -> Run:
        """A new run of the same workflow version as run ``run_id``, which keeps the recorded
        outputs of the steps that run completed before ``from_step`` and runs ``from_step`` and
        every step after it again: the way to re-drive a run after a fix, without repeating
        the work (or the side effects) of the steps before. ``input``: the new run's input
        (None: the original's). The original run is left as it is; the new one's
        ``RunInfo.forked_from`` names it."""
        source = self.get_run(run_id)
        flow = self.catalog.find(source.workflow, source.version)
        request = prepare_fork(flow, source, from_step, input)
        (new_id,) = self._start_runs([request], None)
        return Run(self, new_id)

    async def fork_async(self, run_id: str, from_step: str, input: Any = None) -> Run:
        return await asyncio.to_thread(self.fork, run_id, from_step, input)

    def signal(self, run_id: str, name: str, data: Any = None) -> str | None:
        """Send the signal ``name`` with ``data`` (JSON) to a run: the wait step waiting for it
        (``Workflow.wait_for(..., signal=name)``) completes with ``data``, and its dependents
        are released, in one transaction. A signal that no step waits for yet is kept, and taken
        by the first wait step for it that the run reaches. Returns the step it completed, or
        None when it was kept. RunNotFound for an unknown run, RunFinished for a finished one."""
        signal = check_signal_name(name)
        data_json = dumps(data, what=f"the data of signal {signal!r}")
        return self.engine.send_signal(str(run_id), signal, data_json)

    async def signal_async(self, run_id: str, name: str, data: Any = None) -> str | None:
        return await asyncio.to_thread(self.signal, run_id, name, data)

    def retry(self, run_id: str) -> bool:
        """Resume a failed (or cancelled) run from its unfinished steps; completed steps are not
        run again. False if the run is not failed or cancelled."""
        return self.engine.resume_run(str(run_id))

    async def retry_async(self, run_id: str) -> bool:
        return await asyncio.to_thread(self.retry, run_id)

    # -- instances -----------------------------------------------------------------------------

    def instances(self, *, stale_after: float | None = None) -> list[InstanceInfo]:
        """Registered worker instances, ``offline`` once their heartbeat is older than
        ``stale_after`` seconds (default: the app's ``stale_after``, after which their steps
        are rescued). ``leader`` marks the one holding the leader lease, if any."""
        found = self.engine.list_instances(
            stale_after=self.stale_after if stale_after is None else stale_after
        )
        lease = self.engine.lease_holder(LEADER_LEASE)
        return [
            dataclasses.replace(i, leader=True) if lease and lease[0] == i.instance_id else i
            for i in found
        ]

    async def instances_async(self, *, stale_after: float | None = None) -> list[InstanceInfo]:
        return await asyncio.to_thread(self.instances, stale_after=stale_after)

    # -- workers -------------------------------------------------------------------------------

    def run_worker(
        self, queues: dict[str, int] | Sequence[str] | None = None, **options: Any
    ) -> None:
        """Run a worker in this thread until SIGTERM/SIGINT (graceful) or ``stop()``."""
        from pypgflow.worker import Worker

        Worker(self, queues, **options).run()

    async def run_worker_async(
        self, queues: dict[str, int] | Sequence[str] | None = None, **options: Any
    ) -> None:
        from pypgflow.worker import Worker

        await Worker(self, queues, **options).run_async()
