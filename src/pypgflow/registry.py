"""The instance registry, as one worker takes part in it: its registration, its heartbeat, losing
and regaining contact with the database, and the rescue of other instances' lost steps.

An instance is one worker process, a row in ``instances``. Every ``heartbeat_interval`` it
updates its row, on a thread of its own so that a heartbeat never queues behind claims and
outcomes. An instance silent for longer than ``stale_after`` is offline, and any live instance
rescues the steps it held (:meth:`Engine.rescue_tasks`; what a lost step becomes is
:func:`pypgflow.orchestration.task_lost`'s decision). A worker whose own heartbeats have not
reached the database for longer than ``stale_after`` is *cut off*: by then its steps may be
rescued elsewhere, so it abandons them and claims nothing until the database answers again, then
hands back what is still held for it there. ARCHITECTURE.md ("Many instances") gives the timing
guarantees.

The :class:`Registration` knows nothing of the steps a worker runs: the worker tells it how many
it holds, which task ids it still owns, and what to do when contact is lost or regained.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pypgflow import defaults, observing
from pypgflow.context import ContextLogger
from pypgflow.engines.base import Engine, RescueResult
from pypgflow.errors import DatabaseError, InvalidArgument
from pypgflow.events import Events

T = TypeVar("T")


def default_instance_id() -> str:
    """PYPGFLOW_INSTANCE_ID, else INSTANCE_ID, else host-pid-random."""
    for name in defaults.INSTANCE_ID_ENVS:
        explicit = os.environ.get(name)
        if explicit:
            return explicit
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def check_rescue_options(heartbeat_interval: float, stale_after: float, max_rescues: int) -> None:
    """InvalidArgument unless the three numbers make a registry that cannot mistake a live
    instance for a lost one."""
    for name, value in (("heartbeat_interval", heartbeat_interval), ("stale_after", stale_after)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise InvalidArgument(f"{name} must be a number of seconds > 0, got {value!r}")
    if stale_after <= heartbeat_interval:
        raise InvalidArgument(
            f"stale_after ({stale_after:g} s) must be longer than heartbeat_interval "
            f"({heartbeat_interval:g} s), or live workers would be taken for lost ones "
            "(a few heartbeats: 30 s for the default 5 s)"
        )
    if isinstance(max_rescues, bool) or not isinstance(max_rescues, int) or max_rescues < 0:
        raise InvalidArgument(f"max_rescues must be an integer >= 0, got {max_rescues!r}")


class Registration:
    """One worker's place in the registry, and its share of the rescue of lost instances.

    ``load`` says how many steps the worker runs (reported with each heartbeat); ``owned`` the
    ids of the tasks it still owns (running, or with an outcome not yet recorded), which it keeps
    when it hands back the rest after a time cut off. ``on_cut_off(silent)`` is called once when
    contact is lost and returns how many steps the worker abandoned; ``on_contact_restored()``
    when the database answers again; ``on_work(queues)`` when a rescue or a hand-back put work
    back in these queues. What it rescues is told to ``events`` (``step_rescued``).
    """

    def __init__(
        self,
        engine: Engine,
        instance_id: str,
        queues: dict[str, int],
        *,
        heartbeat_interval: float,
        stale_after: float,
        max_rescues: int,
        load: Callable[[], int],
        owned: Callable[[], Collection[int]],
        on_cut_off: Callable[[float], int],
        on_contact_restored: Callable[[], None],
        on_work: Callable[[Collection[str]], None],
        log: ContextLogger,
        events: Events | None = None,
        versions: Sequence[str] = (),
    ) -> None:
        check_rescue_options(heartbeat_interval, stale_after, max_rescues)
        self.engine = engine
        self.instance_id = instance_id
        self.queues = queues
        #: the workflow versions this instance runs, as registered
        self.versions = list(versions)
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        self.max_rescues = max_rescues
        self._load = load
        self._owned = owned
        self._on_cut_off = on_cut_off
        self._on_contact_restored = on_contact_restored
        self._on_work = on_work
        self.log = log
        self.events = Events() if events is None else events
        #: when the last heartbeat that reached the database was sent (time.monotonic())
        self._last_contact = time.monotonic()
        #: no heartbeat for more than stale_after: the worker's steps abandoned, nothing claimed
        self.cut_off = False
        self._abandoned = 0
        self._failures = 0
        # Heartbeats have a thread of their own: never queued behind claims and outcomes.
        self._beat = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pypgflow-heartbeat")

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A database call on the heartbeat's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._beat, functools.partial(fn, *args, **kwargs))

    # -- joining and leaving ----------------------------------------------------------------------

    async def join(self) -> None:
        """Register (an upsert: a restarted process may keep its id), then hand back what an
        earlier process of this instance id still held: it died without handing it back."""
        self._last_contact = time.monotonic()
        await self._register()
        result = await self._call(
            self.engine.hand_back_lost_tasks,
            self.instance_id,
            keep=[],
            max_rescues=self.max_rescues,
            reason="an earlier process with this instance id stopped without handing it back",
        )
        self._tell(result)
        if result.requeued or result.failed:
            self.log.warning(
                "handed back %d steps an earlier process of instance %s held (%d failed for good)",
                result.requeued + result.failed, self.instance_id, result.failed,
            )  # fmt: skip

    async def leave(self) -> None:
        """Deregister (a graceful stop: nobody has to wait for the stale threshold)."""
        try:
            await self._call(self.engine.deregister_instance, self.instance_id)
        except DatabaseError as exc:
            self.log.warning("could not deregister instance %s: %s", self.instance_id, exc)
        finally:
            self._beat.shutdown(wait=False)

    async def _register(self) -> None:
        await self._call(
            self.engine.register_instance,
            self.instance_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            versions=self.versions,
        )

    # -- heartbeats and lost contact -----------------------------------------------------------

    async def heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        """Tell the database this instance is alive (registering it again if its row is gone);
        after a time cut off, hand back what it abandoned and register again first."""
        sent = time.monotonic()
        try:
            if self.cut_off:
                await self._recover()
            elif await self._call(
                self.engine.heartbeat_or_register,
                self.instance_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=self.queues,
                load=self._load(),
                versions=self.versions,
            ):
                self.log.warning(
                    "instance %s was no longer registered (its row was removed): registered it "
                    "again",
                    self.instance_id,
                )
        except DatabaseError as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 10 == 0:
                self.log.warning(
                    "heartbeat failed (%.1f s since the last one that reached the database; "
                    "steps are abandoned after %g s): %s",
                    time.monotonic() - self._last_contact, self.stale_after, exc,
                )  # fmt: skip
            return
        self._failures = 0
        self._last_contact = sent

    async def contact_watch_loop(self) -> None:
        """Cut the worker off once no heartbeat has reached the database for longer than
        ``stale_after``: by then other instances may rescue its steps. Timed on the loop, so
        that a database call that hangs cannot delay it."""
        while True:
            silent = time.monotonic() - self._last_contact
            if silent <= self.stale_after:
                await asyncio.sleep(min(self.stale_after - silent, self.heartbeat_interval) + 0.01)
                continue
            if not self.cut_off:
                self.cut_off = True
                self._abandoned = self._on_cut_off(silent)
            await asyncio.sleep(self.heartbeat_interval)

    async def _recover(self) -> None:
        """The database answers again: hand back the tasks still held for this instance there
        (those not rescued meanwhile), then register again and go on."""
        silent = time.monotonic() - self._last_contact
        result = await self._call(
            self.engine.hand_back_lost_tasks,
            self.instance_id,
            keep=sorted(self._owned()),
            max_rescues=self.max_rescues,
            reason=(
                f"it was cut off from the database for more than stale_after={self.stale_after:g}"
                " s and abandoned the step"
            ),
            worker_died=False,  # alive: no loss is charged to the steps
        )
        self._tell(result)
        await self._register()
        self.cut_off = False
        self._on_contact_restored()
        self.log.warning(
            "the database is reachable again after %.1f s: instance %s registered again; of the "
            "%d steps it abandoned, %d were handed back to their queues (%d failed for good), "
            "the others had been rescued or finished",
            silent, self.instance_id, self._abandoned, result.requeued, result.failed,
        )  # fmt: skip
        self._abandoned = 0
        self._on_work(self.queues.keys())

    # -- a claim whose answer was lost ------------------------------------------------------------

    async def release_unanswered_claim(self, call: Callable[..., Any]) -> None:
        """A claim failed with a connection error: it may have committed, its answer lost on
        the way, leaving tasks running for this live, heartbeating instance that nobody runs
        (and nobody would rescue). Once the database answers, hand back what is running here
        but not held (running, claimed ahead, or with an outcome not recorded yet), without
        counting the attempt the claim counted. The caller is the claim loop, so that no other
        claim is on its way meanwhile; by the time the worker has a connection again, the lost
        claim has committed or rolled back. Raises DatabaseError if the database is still away."""
        released = await call(
            self.engine.release_unheld_tasks, self.instance_id, keep=sorted(self._owned())
        )
        if released:
            self.log.warning(
                "a claim's answer was lost with its connection: handed %d steps it had claimed "
                "back to their queues",
                released,
            )
            self._on_work(self.queues.keys())

    # -- rescue ----------------------------------------------------------------------------------

    async def rescue_loop(self, call: Callable[..., Any]) -> None:
        """At every heartbeat: make the tasks of lost instances claimable again. ``call`` runs a
        database call off the loop (the worker's database threads)."""
        while True:
            if not self.cut_off:
                try:
                    result: RescueResult = await call(
                        self.engine.rescue_tasks,
                        stale_after=self.stale_after,
                        max_rescues=self.max_rescues,
                        rescuer=self.instance_id,
                    )
                except DatabaseError as exc:
                    self.log.debug("rescue failed: %s", exc)
                else:
                    self._tell(result)
                    if result.requeued or result.failed:
                        self.log.warning(
                            "rescued %d steps of lost instances: %d queued again, %d failed for "
                            "good (runs %s)",
                            result.requeued + result.failed, result.requeued, result.failed,
                            ", ".join(result.runs),
                        )  # fmt: skip
                        self._on_work(result.queues)
            await asyncio.sleep(self.heartbeat_interval)

    def _tell(self, result: RescueResult) -> None:
        """Tell subscribers what a rescue or a hand-back changed (see pypgflow.events)."""
        if result.rescued and self.events.active:
            observing.rescued(self.events, result, self.instance_id)
