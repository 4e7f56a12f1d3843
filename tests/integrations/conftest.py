"""The example projects (examples/) importable by the integration tests."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

for project in ("fastapi_app", "django_project"):
    path = str(EXAMPLES / project)
    if path not in sys.path:
        sys.path.insert(0, path)
