"""The integrations are optional: ``import pypgflow`` loads no web framework, and each
integration imports only its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = ("fastapi", "django", "starlette")


def loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys\n{statement}\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(FRAMEWORKS)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_import_pypgflow_loads_no_web_framework() -> None:
    assert loaded_after("import pypgflow, pypgflow.app, pypgflow.worker") == []


@pytest.mark.parametrize(
    ("module", "frameworks"),
    [("fastapi", ["fastapi", "starlette"]), ("django", ["django"])],
)
def test_each_integration_imports_its_own_framework(module: str, frameworks: list[str]) -> None:
    assert loaded_after(f"import pypgflow.integrations.{module}") == frameworks
