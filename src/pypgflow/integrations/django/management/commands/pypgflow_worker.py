"""``python manage.py pypgflow_worker``: a worker for the project's App, until SIGTERM/SIGINT
(graceful: running steps get the shutdown timeout, the rest go back to their queues)."""

from __future__ import annotations

from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pypgflow import defaults
from pypgflow.cli.logs import LOG_FORMATS, configure_logging
from pypgflow.cli.worker import parse_queues
from pypgflow.errors import PypgflowError
from pypgflow.integrations import worker_options
from pypgflow.integrations.django.conf import config, get_app
from pypgflow.slots import queue_slots


class Command(BaseCommand):
    help = "Run a pypgflow worker for settings.PYPGFLOW's App until SIGTERM or SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-q", "--queue", action="append", default=[], metavar="NAME[=SLOTS]",
            help="A queue to work on, with how many of its steps may run at once (repeatable; "
            "default: PYPGFLOW['QUEUES'], else the 'default' queue).",
        )  # fmt: skip
        parser.add_argument(
            "-c", "--concurrency", type=int, default=defaults.DEFAULT_SLOTS,
            help="Slots of each --queue given without =SLOTS.",
        )  # fmt: skip
        parser.add_argument(
            "--shutdown-timeout", type=float, default=None, metavar="SECONDS",
            help="How long running steps may finish after SIGTERM before they are handed back.",
        )  # fmt: skip

        parser.add_argument(
            "--log-level", default="info", choices=["debug", "info", "warning", "error"],
            help="Log to stderr from this level (unless LOGGING gives the root logger handlers).",
        )  # fmt: skip
        parser.add_argument("--log-format", default="text", choices=LOG_FORMATS)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            given = config()
            chosen = worker_options(given.get("WORKER") or {}, "settings.PYPGFLOW['WORKER']")
            if options["shutdown_timeout"] is not None:
                chosen["shutdown_timeout"] = options["shutdown_timeout"]
            if options["concurrency"] < 1:
                raise CommandError("--concurrency must be at least 1")
            if options["queue"]:
                queues: Any = parse_queues(options["queue"], options["concurrency"])
            else:
                queues = queue_slots(given.get("QUEUES"))
            app = get_app()
            configure_logging(options["log_level"], options["log_format"])
            app.run_worker(queues, **chosen)
        except click.BadParameter as exc:
            raise CommandError(exc.message) from None
        except PypgflowError as exc:
            raise CommandError(str(exc)) from None
