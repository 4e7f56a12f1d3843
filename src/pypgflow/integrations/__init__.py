"""pypgflow inside web frameworks: :mod:`pypgflow.integrations.fastapi` and
:mod:`pypgflow.integrations.django`, each an optional extra (``pip install 'pypgflow[fastapi]'``,
``'pypgflow[django]'``).

Nothing here is imported by ``import pypgflow``: each module imports its framework itself, and
says which extra to install when it is missing.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from pypgflow.errors import InvalidArgument
from pypgflow.worker import Worker

#: what a Worker takes as keyword options, but a web framework's process decides itself
_DECIDED_HERE = frozenset({"self", "app", "queues", "install_signal_handlers"})
WORKER_OPTIONS = frozenset(inspect.signature(Worker.__init__).parameters) - _DECIDED_HERE


def worker_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` for a :class:`~pypgflow.worker.Worker`, their names checked (``where`` says
    where they were given): a misspelt one is an error when the project starts, not ignored."""
    unknown = sorted(set(options) - WORKER_OPTIONS)
    if unknown:
        raise InvalidArgument(
            f"{where}: unknown worker options {', '.join(unknown)} "
            f"(a worker takes {', '.join(sorted(WORKER_OPTIONS))})"
        )
    return dict(options)
