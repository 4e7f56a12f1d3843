"""The Django application of pypgflow (``"pypgflow.integrations.django"`` in INSTALLED_APPS):
its management commands, and the settings App renewed when a test overrides its settings."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed

from pypgflow.integrations.django.conf import SETTING, close_app


class PypgflowConfig(AppConfig):
    name = "pypgflow.integrations.django"
    label = "pypgflow"
    verbose_name = "pypgflow"

    def ready(self) -> None:
        setting_changed.connect(_renew_app, dispatch_uid="pypgflow-setting-changed")


def _renew_app(*, setting: str, **_: Any) -> None:
    """``override_settings(PYPGFLOW=...)`` (or DATABASES): the next get_app() reads them anew."""
    if setting in (SETTING, "DATABASES"):
        close_app()
