"""The leader's periodic work: which instance leads, and what only the leader does.

Every worker holds a :class:`Leader` and runs it as one of its background tasks. It owns:

- **Leadership.** One database lease, ``"leader"``, held for ``lease_ttl`` seconds (15 by
  default) of database time. Every worker tries to take or renew it every ``lease_ttl / 3``;
  a follower that finds it held retries when the holder's lease would run out, so when the
  leader dies another instance leads within one lease period (plus a few milliseconds). An
  instance believes it leads only until ``lease_ttl`` after it *asked* for its last renewal,
  which is never later than the database lets the lease run: two instances never both believe
  they lead. A graceful stop releases the lease at once. :attr:`Leader.is_leader` is
  ``Worker.is_leader``; changes are logged.
- **Cron ticks.** At start every worker stores its app's schedule definitions in the
  ``schedules`` table, so that any process can list them. While it leads, an instance makes a
  pass every second (or at the next tick, if sooner): for each schedule its app defines, the
  ticks due since its last tick (or since its definition was stored, for a new one) become runs,
  each started with the tick's idempotency key (:meth:`Schedule.idempotency_key`), then the last
  and next ticks are recorded. The key makes a tick's run unique in the database: a leader
  replaced in the middle of a pass, or two instances briefly both acting, start each tick once.
  Ticks missed for up to ``catch_up`` seconds (5 minutes: longer than any change of leader) are
  all started, oldest first; after a longer outage only the latest missed tick is.
- **Retention.** While it leads, every ``retention.interval`` seconds: completed and cancelled
  runs finished more than ``retention.completed`` ago (7 days), and failed runs finished more
  than ``retention.failed`` ago (30 days), are deleted with their steps and tasks in batches of
  ``retention.batch`` runs (one short transaction each, a pause between them); instances offline
  for over ``retention.instances`` (an hour) are removed.

Like the worker, it never holds SQL: it calls engine verbs on threads of its own, one for the
lease (so that a renewal never waits behind a claim, an outcome or a long pass) and one for the
leader's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pypgflow import defaults, observing
from pypgflow.context import context_logger
from pypgflow.cron import Schedule
from pypgflow.definitions import Definitions
from pypgflow.engines.base import ScheduleState, ScheduleTicks
from pypgflow.engines.starts import StartRequest
from pypgflow.errors import DatabaseError, InvalidArgument, PypgflowError, UnknownWorkflow
from pypgflow.limits import rate_margin
from pypgflow.retention import DEFAULT_RETENTION, Pruned, Retention, seconds
from pypgflow.starting import prepare_start

#: the lease whose holder is the leader
LEADER_LEASE = "leader"
#: at most this many ticks of one schedule are considered in one pass
MAX_TICKS_PER_PASS = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class _Plan:
    """One schedule's part of a pass: its due ticks, their starts, its next tick."""

    schedule: Schedule
    state: ScheduleState
    ticks: list[datetime]
    requests: list[StartRequest]
    next_tick: datetime


class Leader:
    """Leadership, cron ticks and retention for one instance (see the module's docstring).

    ``retention=None`` disables pruning. ``tick_interval`` and ``catch_up`` are seconds.
    """

    def __init__(
        self,
        app: Definitions,
        *,
        instance_id: str | None = None,
        lease_ttl: float = defaults.DEFAULT_LEASE_TTL,
        retention: Retention | None = DEFAULT_RETENTION,
        tick_interval: float = defaults.DEFAULT_TICK_INTERVAL,
        catch_up: float = defaults.DEFAULT_CATCH_UP,
    ) -> None:
        self.lease_ttl = seconds(lease_ttl, "lease_ttl", positive=True)
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidArgument(
                f"retention must be a Retention (or None to keep every run), got {retention!r}"
            )
        self.app = app
        self.engine = app.engine
        self.events = app.events
        self.instance_id = instance_id or app.instance_id
        self.retention = retention
        self.tick_interval = seconds(tick_interval, "tick_interval", positive=True)
        self.catch_up = seconds(catch_up, "catch_up")
        # Threads start on first use; run() shuts them down when it ends.
        self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="pypgflow-lease")
        self._work_thread = ThreadPoolExecutor(1, thread_name_prefix="pypgflow-leader")
        self._leader = False
        self._lease_until = 0.0  # time.monotonic() until which this instance may act as leader
        self._ever_held = False  # (then a stop releases the lease, whatever its last renewal did)
        self._synced = False
        self._gained: asyncio.Event | None = None
        self._logged_foreign: set[str] = set()
        self._failing: dict[str, str] = {}  # schedule name: its failure, as last logged
        self.log = context_logger("pypgflow.leader", instance_id=self.instance_id)

    async def _on(
        self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """``fn(*args, **kwargs)`` on one of this leader's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    # -- leadership ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this instance holds the leader lease (by its own, cautious, clock)."""
        return self._leader and time.monotonic() < self._lease_until

    def _set_leader(self, leader: bool, why: str = "") -> None:
        if leader == self._leader:
            return
        self._leader = leader
        if leader:
            self.log.info(
                "instance %s is now the leader (lease of %g s)", self.instance_id, self.lease_ttl
            )
            if self._gained is not None:
                self._gained.set()
        else:
            self._lease_until = 0.0
            self.log.warning("instance %s is no longer the leader: %s", self.instance_id, why)
        if self.events.active:
            observing.leadership(self.events, leader, self.instance_id, why)

    async def acquire(self) -> bool:
        """Take or renew the leader lease once; True if this instance now leads."""
        asked = time.monotonic()
        held = await self._on(
            self._lease_thread,
            self.engine.acquire_lease,
            LEADER_LEASE,
            self.instance_id,
            self.lease_ttl,
        )
        if held:
            self._lease_until = asked + self.lease_ttl
            self._ever_held = True
            self._set_leader(True)
        else:
            self._set_leader(False, "another instance holds the lease")
        return bool(held)

    async def release(self) -> None:
        """Give the lease up (on a graceful stop): another instance may lead at once."""
        self._leader = False
        self._lease_until = 0.0
        if not self._ever_held:  # a follower all along: nothing to release
            return
        try:
            released = await asyncio.wait_for(
                self._on(
                    self._lease_thread, self.engine.release_lease, LEADER_LEASE, self.instance_id
                ),
                5.0,
            )
            if released:
                self.log.info("instance %s released the leader lease", self.instance_id)
        except (DatabaseError, TimeoutError) as exc:
            self.log.warning(
                "could not release the leader lease (%s): it runs out within %g s",
                exc, self.lease_ttl,
            )  # fmt: skip

    async def _lease_loop(self) -> None:
        failures = 0
        while True:
            wait = self.lease_ttl / 3
            try:
                held = await self.acquire()
                failures = 0
                if not held:
                    holder = await self._on(
                        self._lease_thread, self.engine.lease_holder, LEADER_LEASE
                    )
                    # Try again as the holder's lease runs out: a dead leader is replaced
                    # within one lease period of its last renewal.
                    wait = 0.05 if holder is None else min(wait, max(0.0, holder[1]) + 0.02)
            except Exception as exc:  # the database, or a bug: keep trying
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    if isinstance(exc, DatabaseError):
                        self.log.warning("cannot take or renew the leader lease: %s", exc)
                    else:
                        self.log.exception("leader lease: unexpected error; retrying")
                if self._leader and time.monotonic() >= self._lease_until:
                    self._set_leader(False, "its lease ran out while the database was unreachable")
                elif self._leader:  # retry sooner, and notice when the lease runs out
                    wait = min(wait, max(0.01, self._lease_until - time.monotonic()))
            await asyncio.sleep(wait)

    async def _until_leader(self, timeout: float | None = None) -> None:
        """Sleep until this instance becomes the leader (or ``timeout`` passes)."""
        assert self._gained is not None  # noqa: S101  a type narrowing: run() makes it first
        self._gained.clear()
        if self.is_leader:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._gained.wait(), timeout)

    # -- running ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Lead when possible, and do the leader's work while leading, until ``stop`` is set (or
        the task is cancelled); then release the lease."""
        self._gained = asyncio.Event()
        loops = [
            asyncio.create_task(self._lease_loop(), name="pypgflow-leader-lease"),
            asyncio.create_task(self._tick_loop(), name="pypgflow-cron"),
        ]
        if self.retention is not None:
            loops.append(asyncio.create_task(self._retention_loop(), name="pypgflow-retention"))
        try:
            if stop is None:
                await asyncio.gather(*loops)
            else:
                await stop.wait()
        finally:
            # The lease is released even if this task is cancelled meanwhile (a worker cancels
            # its background tasks as it stops): the cleanup runs on, and is waited for.
            cleanup = asyncio.ensure_future(self._wind_down(loops))
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                await cleanup
                raise

    async def _wind_down(self, loops: list[asyncio.Task[None]]) -> None:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        # On the lease thread, after any renewal still in flight: the lease stays released.
        await self.release()
        self._lease_thread.shutdown(wait=False)
        self._work_thread.shutdown(wait=False)

    async def _tick_loop(self) -> None:
        failures = 0
        while True:
            wait = self.tick_interval
            try:
                if self.app.defined_schedules and not self._synced:
                    await self._on(self._work_thread, self.sync)
                if self.app.defined_schedules and self.is_leader:
                    next_tick = await self._on(self._work_thread, self.tick)
                    if next_tick is not None:  # wake just after it, if sooner
                        until = (next_tick - datetime.now(UTC)).total_seconds() + 0.002
                        wait = min(wait, max(0.005, until))
                failures = 0
            except Exception as exc:  # the database, or a bug: never end the leader's work
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    if isinstance(exc, DatabaseError):
                        self.log.warning("cron: cannot store schedules or start runs: %s", exc)
                    else:
                        self.log.exception("cron: unexpected error; retrying")
            if self.is_leader:
                await asyncio.sleep(wait)
            else:  # a follower has nothing to do but a failed sync to retry
                await self._until_leader(wait if failures else None)

    async def _retention_loop(self) -> None:
        assert self.retention is not None  # noqa: S101  a type narrowing: run() checks it
        while True:
            if not self.is_leader:
                await self._until_leader(None)
                continue
            try:
                await self.prune()
            except DatabaseError as exc:
                self.log.warning("retention: cannot prune finished runs (%s); retrying later", exc)
            await asyncio.sleep(self.retention.interval)

    # -- cron ---------------------------------------------------------------------------------

    def sync(
        self, now: datetime | None = None, schedules: Iterable[Schedule] | None = None
    ) -> None:
        """Store the app's schedule definitions (blocking; any instance, at start)."""
        chosen = list(self.app.defined_schedules.values() if schedules is None else schedules)
        now = now or datetime.now(UTC)
        kept: list[Schedule] = []
        next_ticks: list[datetime] = []
        for schedule in chosen:
            with self._isolated(schedule):
                next_ticks.append(schedule.next_tick(now))
                kept.append(schedule)
        self.engine.sync_schedules(kept, next_ticks)
        if schedules is None:
            self._synced = True

    def tick(self, now: datetime | None = None) -> datetime | None:
        """One pass (blocking): start the due ticks of the app's schedules and record them.
        Returns the earliest next tick (None without schedules). A schedule that fails (its
        ticks, its start refused) is logged and left out of the pass; the others still fire."""
        schedules = list(self.app.defined_schedules.values())
        if not schedules:
            return None
        now = now or datetime.now(UTC)
        if not self._synced:
            self.sync(now)
        states = self.engine.schedule_states()
        missing = [s for s in schedules if s.name not in states]
        if missing:  # removed behind our back: stored again, ticking from now
            self.sync(now, missing)
            states = self.engine.schedule_states()
        self._log_foreign(states)
        plans: list[_Plan] = []
        for schedule in schedules:
            state = states.get(schedule.name)
            if state is None:
                continue
            with self._isolated(schedule):
                next_tick = schedule.next_tick(now)
                ticks = self.due_ticks(schedule, state, now)
                requests = [self._request(schedule, tick) for tick in ticks]
                plans.append(_Plan(schedule, state, ticks, requests, next_tick))
        try:
            self._start(plans)
        except DatabaseError:
            raise  # the database, not a schedule: the whole pass is tried again
        except Exception:  # one schedule's start refused (say, IdempotencyConflict): each alone
            started = []
            for plan in plans:
                with self._isolated(plan.schedule):
                    self._start([plan])
                    started.append(plan)
            plans = started
        records = [
            ScheduleTicks(p.schedule.name, p.ticks[-1] if p.ticks else None, p.next_tick)
            for p in plans
            if p.ticks or p.state.next_tick_at != p.next_tick
        ]
        if records:
            self.engine.record_schedule_ticks(records)
        for plan in plans:
            self._failing.pop(plan.schedule.name, None)
        return min((p.next_tick for p in plans), default=None)

    def _start(self, plans: list[_Plan]) -> None:
        requests = [r for p in plans for r in p.requests]
        if not requests:
            return
        run_ids = observing.start_runs(
            self.events, requests, self.instance_id, self.engine.start_runs
        )
        started = [(p.schedule, t) for p in plans for t in p.ticks]
        for request, (schedule, tick), run_id in zip(requests, started, run_ids, strict=True):
            # Another id: the tick's key was taken, its run started by an earlier leader.
            self.log.info(
                "cron: schedule %r, tick %s: %s run %s of %s",
                schedule.name, tick.isoformat(),
                "started" if run_id == request.run.id else "already started,", run_id,
                schedule.workflow,
                extra={"run_id": run_id},
            )  # fmt: skip

    @contextlib.contextmanager
    def _isolated(self, schedule: Schedule) -> Iterator[None]:
        """One schedule's failure logged (once while it lasts) and swallowed, so that it never
        stops the others; a database error still ends the pass, to be tried again."""
        try:
            yield
        except DatabaseError:
            raise
        except Exception as exc:
            said = f"{type(exc).__name__}: {exc}"
            if self._failing.get(schedule.name) != said:
                self._failing[schedule.name] = said
                self.log.warning(
                    "cron: schedule %r cannot fire (%s); the other schedules still do",
                    schedule.name, said,
                    exc_info=not isinstance(exc, PypgflowError),  # a bug: its traceback
                )  # fmt: skip

    def due_ticks(self, schedule: Schedule, state: ScheduleState, now: datetime) -> list[datetime]:
        """The ticks to start now: every tick since the last one (or since the definition was
        stored) if the oldest is at most ``catch_up`` seconds old (a change of leader, a short
        outage); after a longer outage, only the latest: one catch-up run, not a storm."""
        since = state.last_tick_at or state.defined_at
        ticks = schedule.due_ticks(since, now, limit=MAX_TICKS_PER_PASS)
        if not ticks or (now - ticks[0]).total_seconds() <= self.catch_up:
            return ticks
        self.log.warning(
            "cron: schedule %r missed ticks for over %g s (since %s): starting only the latest, "
            "%s",
            schedule.name, self.catch_up, since.isoformat(), ticks[-1].isoformat(),
        )  # fmt: skip
        return ticks[-1:]

    def _request(self, schedule: Schedule, tick: datetime) -> StartRequest:
        flow = self.app.workflows.get(schedule.workflow)
        if flow is None:
            raise UnknownWorkflow(
                f"schedule {schedule.name!r} starts workflow {schedule.workflow!r}, which this "
                "app does not register"
            )
        (request,) = prepare_start(
            flow,
            json.loads(schedule.input_json),
            queue=schedule.queue,
            priority=schedule.priority,
            run_at=tick,  # the run is due at once, and shows its tick as scheduled_at
            idempotency_key=schedule.idempotency_key(tick),
        )
        return request

    def _log_foreign(self, states: dict[str, ScheduleState]) -> None:
        for name in sorted(states.keys() - self.app.defined_schedules.keys()):
            if name not in self._logged_foreign:
                self._logged_foreign.add(name)
                self.log.warning(
                    "cron: schedule %r is stored but not defined by this app: it does not fire "
                    "while this instance leads",
                    name,
                )

    # -- retention ----------------------------------------------------------------------------

    async def prune(self, *, while_leader: bool = True) -> Pruned:
        """One retention pass: finished runs past their age, batch by batch, then long-offline
        instances. Stops early if this instance stops leading (unless ``while_leader=False``)."""
        retention = self.retention or Retention()
        runs = batches = 0
        position = None
        while not while_leader or self.is_leader:
            deleted, position = await self._on(
                self._work_thread,
                self.engine.prune_runs,
                completed_before=retention.completed_seconds,
                failed_before=retention.failed_seconds,
                batch=retention.batch,
                after=position,
            )
            batches += 1
            runs += deleted
            if deleted < retention.batch:
                break
            await asyncio.sleep(retention.pause)
        instances: int = await self._on(
            self._work_thread, self.engine.prune_instances, offline_for=retention.instances_seconds
        )
        windows = {r.name: r.per + rate_margin(r.per) for r in self.app.rate_limits.values()}
        if windows:
            await self._on(self._work_thread, self.engine.prune_rate_tokens, windows)
        if runs or instances:
            self.log.info(
                "retention: deleted %d finished runs (%d batches) and %d offline instances",
                runs, batches, instances,
            )  # fmt: skip
        return Pruned(runs=runs, batches=batches, instances=instances)
