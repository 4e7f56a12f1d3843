"""A worker's execution slots: how many steps of each queue run at once, how many tasks to claim
now, and the tasks claimed ahead of a free slot.

A queue with ``n`` slots runs at most ``n`` steps at once. While its steps are short (their
moving average under :data:`CLAIM_AHEAD_BELOW` seconds), the worker also claims up to ``n``
tasks *ahead*: they wait here, and one starts the moment a slot frees, so a slot never waits for
a claim's round trip. A queue of long steps claims only for its free slots, so that it never
holds work another worker could start at once. Tasks claimed ahead are the worker's own like the
running ones: cancelled, handed back at shutdown, abandoned when cut off.

A task with a fleet-wide limit (see pypgflow.limits) claimed while its gate is full of this
worker's own steps waits *unadmitted*: no slot takes it until the worker admits it through its
gate, the moment one of those steps ends (the claim's round trip is then behind it already).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping, Sequence

from pypgflow import defaults
from pypgflow.engines.base import ClaimedTask
from pypgflow.errors import InvalidArgument
from pypgflow.starting import check_queue

#: a queue whose steps take less than this on average (seconds) claims ahead of its free slots
CLAIM_AHEAD_BELOW = 0.05
#: the weight of the newest duration in the moving average
_SMOOTHING = 1 / 8


def queue_slots(queues: Mapping[str, int] | Sequence[str] | None) -> dict[str, int]:
    """A worker's queues and their slots, checked: a mapping of names to slots, a list of names
    (each with the default slots), or None (the default queue)."""
    if queues is None:
        queues = {defaults.DEFAULT_QUEUE: defaults.DEFAULT_SLOTS}
    elif not isinstance(queues, Mapping):
        queues = dict.fromkeys(queues, defaults.DEFAULT_SLOTS)
    for name, slots in queues.items():
        check_queue(name)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise InvalidArgument(f"queue {name!r}: slots must be an integer >= 1, got {slots!r}")
    return dict(queues)


class Slots:
    """The slots of every queue of one worker (``queues``: name → slots)."""

    def __init__(self, queues: dict[str, int]) -> None:
        self.queues = queues
        self.running = dict.fromkeys(queues, 0)
        self._ahead: dict[str, collections.deque[ClaimedTask]] = {
            queue: collections.deque() for queue in queues
        }
        #: claimed ahead, their gates not passed yet: not started by a freed slot
        self._unadmitted: dict[str, collections.deque[ClaimedTask]] = {
            queue: collections.deque() for queue in queues
        }
        self._step_seconds = dict.fromkeys(queues, 0.0)

    def room(self, queue: str) -> int:
        """How many tasks of ``queue`` to claim now: its free slots, plus as many ahead of them
        as it has slots while its steps are short, less those already claimed ahead."""
        slots = self.queues[queue]
        ahead = slots if self._step_seconds[queue] < CLAIM_AHEAD_BELOW else 0
        waiting = len(self._ahead[queue]) + len(self._unadmitted[queue])
        return slots + ahead - self.running[queue] - waiting

    def has_room(self) -> bool:
        return any(self.room(queue) > 0 for queue in self.queues)

    def free(self, queue: str) -> bool:
        """Whether a step of ``queue`` may start now."""
        return self.running[queue] < self.queues[queue]

    def started(self, queue: str) -> None:
        self.running[queue] += 1

    def finished(self, queue: str, seconds: float) -> ClaimedTask | None:
        """A step of ``queue`` ended after ``seconds``: its slot is free. Returns the task
        claimed ahead that takes it, if any."""
        self.running[queue] -= 1
        average = self._step_seconds[queue]
        self._step_seconds[queue] = average + (seconds - average) * _SMOOTHING
        ahead = self._ahead[queue]
        return ahead.popleft() if ahead else None

    def wait(self, queue: str, task: ClaimedTask) -> None:
        """Keep a task claimed ahead until a slot of its queue frees."""
        self._ahead[queue].append(task)

    def hold_unadmitted(self, queue: str, task: ClaimedTask) -> None:
        """Keep a task claimed ahead until the worker admits it through its gates."""
        self._unadmitted[queue].append(task)

    def take_unadmitted(self, queue: str, n: int) -> list[ClaimedTask]:
        """The first ``n`` unadmitted tasks of ``queue``, no longer kept here."""
        unadmitted = self._unadmitted[queue]
        return [unadmitted.popleft() for _ in range(min(n, len(unadmitted)))]

    def unadmitted(self, queue: str) -> int:
        return len(self._unadmitted[queue])

    def admitted_ahead(self, queue: str) -> Iterator[ClaimedTask]:
        """The tasks of ``queue`` claimed ahead that a freed slot starts."""
        return iter(self._ahead[queue])

    def waiting(self) -> Iterator[ClaimedTask]:
        """The tasks claimed ahead, not started (admitted or not)."""
        for queue, ahead in self._ahead.items():
            yield from ahead
            yield from self._unadmitted[queue]

    def waiting_ids(self) -> set[int]:
        return {task.id for task in self.waiting()}

    def drop_waiting(self, task_ids: set[int]) -> None:
        """Drop the tasks claimed ahead whose ids are in ``task_ids`` (they were cancelled);
        tasks claimed since the caller looked are not among them, and stay."""
        for kept in (self._ahead, self._unadmitted):
            for queue, ahead in kept.items():
                kept[queue] = collections.deque(t for t in ahead if t.id not in task_ids)

    def clear_waiting(self) -> set[int]:
        """Give up every task claimed ahead; returns their ids."""
        ids = self.waiting_ids()
        for ahead in (*self._ahead.values(), *self._unadmitted.values()):
            ahead.clear()
        return ids
