"""What an app defines, as the worker and the leader read it.

:class:`~pypgflow.app.App` is the public face that users build; the worker and the leader depend
only on this :class:`Definitions` protocol, which it satisfies, so that the layers below the App
never import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pypgflow.cron import Schedule
from pypgflow.engines.base import Engine
from pypgflow.events import Events
from pypgflow.limits import RateLimit
from pypgflow.workflow import Workflow


class Definitions(Protocol):
    """An app's engine, identity and definitions."""

    @property
    def engine(self) -> Engine:
        """Where its runs are stored."""
        ...

    @property
    def instance_id(self) -> str:
        """This process's name in the instance registry."""
        ...

    @property
    def stale_after(self) -> float:
        """Seconds without a heartbeat after which an instance is offline."""
        ...

    @property
    def workflows(self) -> Mapping[str, Workflow]:
        """The registered workflows, by name."""
        ...

    @property
    def workflow_versions(self) -> Mapping[tuple[str, str], Workflow]:
        """Every registered workflow version, by (name, version): the runs a worker takes."""
        ...

    def store_definitions(self) -> None:
        """Store the registered workflow versions' blueprints."""
        ...

    @property
    def defined_schedules(self) -> Mapping[str, Schedule]:
        """The cron schedules defined in code, by name."""
        ...

    @property
    def queue_limits(self) -> Mapping[str, int]:
        """The fleet-wide concurrency limit of each limited queue (``App.queue``)."""
        ...

    @property
    def rate_limits(self) -> Mapping[str, RateLimit]:
        """The rate limits steps may take tokens of (``App.rate_limit``), by name."""
        ...

    @property
    def events(self) -> Events:
        """Where the worker and the leader tell what they do (see pypgflow.events)."""
        ...
