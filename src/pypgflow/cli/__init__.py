"""The `pypgflow` command line: operators' tools over an App and its database.

Commands that run the user's workflows (``worker``, ``start``) load the app named by
``MODULE:APP``; commands that only read or change runs need just a database URL (``--database-url``
or ``PYPGFLOW_DATABASE_URL``), or take it from an app with ``--app MODULE:APP``.

Exit codes: 0 success, 1 an error (or a run that failed, with ``start --wait``), 2 a usage error.

The parts: :mod:`~pypgflow.cli.group` (the ``pypgflow`` group and its global options),
:mod:`~pypgflow.cli.loading` (the user's app), :mod:`~pypgflow.cli.output` (what is printed),
:mod:`~pypgflow.cli.logs` (the worker's logging), and one module per family of commands. Every
default comes from :mod:`pypgflow.defaults`.
"""

from __future__ import annotations

from pypgflow.cli import (
    actions,
    dashboard,
    demo,
    fleet,
    interact,
    migrate,
    new,
    runs,
    start,
    worker,
)
from pypgflow.cli.group import main
from pypgflow.cli.loading import load_app

for _command in (
    migrate.migrate,
    worker.worker,
    start.start,
    runs.list_runs,
    runs.show_run,
    actions.retry,
    actions.cancel,
    interact.send_signal,
    interact.fork,
    fleet.instances,
    fleet.list_schedules,
    demo.demo,
    new.new,
    dashboard.dashboard,
):
    main.add_command(_command)
del _command

__all__ = ["load_app", "main"]
