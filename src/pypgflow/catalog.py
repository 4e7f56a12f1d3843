"""The workflows an app knows, by name and version.

An app may register several versions of a workflow side by side (a deploy keeps the old one
until its runs drain): ``start`` uses the newest registered, or the one ``version=`` names, and
its workers claim the runs of every version they have. A name the app has no code for is looked
up among the stored blueprints (see :mod:`pypgflow.blueprints`), so that a process that only
starts runs need not import the workflows' code. Each version's blueprint is stored by the
app's migrate, by its workers when they start, and the first time this process starts it.
"""

from __future__ import annotations

import threading
from typing import Any

from pypgflow.blueprints import blueprint, from_blueprint
from pypgflow.engines.base import Engine
from pypgflow.errors import InvalidArgument, SchemaNotMigrated, UnknownWorkflow
from pypgflow.workflow import Workflow


class Catalog:
    """Registered workflows by name (the newest version) and by (name, version)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: the newest registered version of each workflow, by name (what ``start`` uses)
        self.newest: dict[str, Workflow] = {}
        #: every registered version, by (name, version)
        self.versions: dict[tuple[str, str], Workflow] = {}
        self._stored: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def add(self, flow: Workflow) -> None:
        """Register ``flow``: the newest version of its name from now on."""
        key = (flow.name, flow.version)
        known = self.versions.get(key)
        if known is not None and known is not flow:
            raise InvalidArgument(
                f"another definition of workflow {flow.name!r} version {flow.version!r} is "
                "already registered: a changed workflow needs a new version= (or, without one, "
                "a new shape)"
            )
        self.versions[key] = flow
        self.newest.pop(flow.name, None)  # re-inserted last: the newest
        self.newest[flow.name] = flow

    def add_child(self, flow: Workflow) -> None:
        """Register ``flow`` as a workflow another one runs as a child: as :meth:`add` if it is
        new, but never over a version registered already (the app's own choice of the newest)."""
        if (flow.name, flow.version) in self.versions:
            return
        self.versions[flow.name, flow.version] = flow
        self.newest.setdefault(flow.name, flow)

    @property
    def version_keys(self) -> list[str]:
        """``name@version`` of every registered version, as claims take them."""
        return sorted(f"{name}@{version}" for name, version in self.versions)

    def find(self, name: str, version: str | None = None) -> Workflow:
        """The registered workflow of that name (and version), else its stored blueprint as a
        code-less workflow; UnknownWorkflow naming what exists if neither."""
        flow = self.newest.get(name) if version is None else self.versions.get((name, version))
        if flow is not None:
            return flow
        stored = self._stored_definitions(name)
        for data in stored:
            if version is None or data.get("version") == version:
                return from_blueprint(data)
        if version is not None and (name in self.newest or stored):
            known = sorted(
                {v for n, v in self.versions if n == name} | {d["version"] for d in stored}
            )
            raise UnknownWorkflow(
                f"workflow {name!r} has no version {version!r} registered or stored (known: "
                f"{', '.join(known)})"
            )
        others = sorted({d["name"] for d in self._stored_definitions()} - self.newest.keys())
        raise UnknownWorkflow(
            f"no workflow named {name!r} is registered with this app (registered: "
            f"{', '.join(sorted(self.newest)) or 'none'}) or stored in its database"
            + (f" (stored: {', '.join(others)})" if others else "")
        )

    def _stored_definitions(self, name: str | None = None) -> list[dict[str, Any]]:
        try:
            return self.engine.stored_definitions(name)
        except SchemaNotMigrated:  # nothing stored yet
            return []

    def ensure_stored(self, flow: Workflow) -> None:
        """Store ``flow``'s blueprint if this process has not yet."""
        if (flow.name, flow.version) not in self._stored:
            self.store([flow])

    def store(self, flows: list[Workflow] | None = None) -> None:
        """Store the blueprints of ``flows`` (None: every registered version)."""
        chosen = list(self.versions.values()) if flows is None else flows
        if not chosen:
            return
        with self._lock:
            self.engine.store_definitions([blueprint(flow) for flow in chosen])
            self._stored.update((flow.name, flow.version) for flow in chosen)
