"""``python manage.py pypgflow_migrate``: create or upgrade pypgflow's schema in the project's
database (idempotent), and store its workflows' definitions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from pypgflow.errors import PypgflowError
from pypgflow.integrations.django.conf import get_app


class Command(BaseCommand):
    help = "Create or upgrade pypgflow's schema for settings.PYPGFLOW's App."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            applied = get_app().migrate()
        except PypgflowError as exc:
            raise CommandError(str(exc)) from None
        if applied:
            self.stdout.write(f"applied pypgflow schema versions {', '.join(map(str, applied))}")
        else:
            self.stdout.write("pypgflow schema up to date")
