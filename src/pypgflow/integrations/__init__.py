"""pypgflow inside web frameworks: :mod:`pypgflow.integrations.fastapi` and
:mod:`pypgflow.integrations.django`, each an optional extra (``pip install 'pypgflow[fastapi]'``,
``'pypgflow[django]'``).

Nothing here is imported by ``import pypgflow``: each module imports its framework itself, and
says which extra to install when it is missing.
"""
