"""Django: pypgflow in a Django project (``pip install 'pypgflow[django]'``).

Add ``"pypgflow.integrations.django"`` to ``INSTALLED_APPS`` and describe the App in settings::

    PYPGFLOW = {
        "WORKFLOWS": ["shop.flows:fulfil_order"],   # or "APP": "shop.flows:app"
        # "DATABASE_URL": "postgresql://...",       # default: DATABASES["default"] if PostgreSQL
    }

Then :func:`get_app` is that App, :func:`start_in_transaction` starts a run inside the current
``transaction.atomic()`` block (it exists only if the block commits), and
``python manage.py pypgflow_worker`` / ``pypgflow_migrate`` run a worker and create the schema.
The keys of ``PYPGFLOW`` are in :mod:`pypgflow.integrations.django.conf`.
"""

from __future__ import annotations

from pypgflow.errors import ConfigurationError

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed in development
    raise ConfigurationError(
        f"pypgflow.integrations.django needs Django ({exc.name} is missing): "
        "pip install 'pypgflow[django]'"
    ) from exc

from pypgflow.integrations.django.conf import close_app, get_app
from pypgflow.integrations.django.transactions import (
    start_in_transaction,
    start_many_in_transaction,
)

__all__ = ["close_app", "get_app", "start_in_transaction", "start_many_in_transaction"]
