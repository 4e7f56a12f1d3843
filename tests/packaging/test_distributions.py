"""The distributions users install: ``python -m build`` makes an sdist and, from it, a wheel
(which proves the sdist complete); each installs in a clean virtualenv, with nothing but its
declared dependencies, and runs ``pypgflow demo``. The wheel ships ``py.typed``, the SQL and the
dashboard's files, the version written once in ``pypgflow/__init__.py``, and the extras.

Building and installing fetch the build backend and the dependencies from the package index,
as a user's ``pip install`` does.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import pypgflow

ROOT = Path(__file__).resolve().parents[2]
NAME = f"pypgflow-{pypgflow.__version__}"
EXTRAS = {
    "dashboard": {"starlette>=0.40", "jinja2>=3.1", "uvicorn>=0.30"},
    "django": {"django>=4.2"},
    "fastapi": {"fastapi>=0.115"},
    "otel": {"opentelemetry-api>=1.20"},
    "prometheus": {"prometheus-client>=0.17"},
    "pydantic": {"pydantic>=2"},
}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run(*args: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYPGFLOW_DATABASE_URL", "PYTHONPATH")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def test_build_makes_an_sdist_and_a_wheel(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"{NAME}-py3-none-any.whl",
        f"{NAME}.tar.gz",
    ]


def test_the_wheel_ships_its_types_sql_files_and_extras(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(archive.read(f"{NAME}.dist-info/METADATA"))
    assert "pypgflow/py.typed" in names
    for path in (
        "pypgflow/engines/postgres/queries.sql",
        "pypgflow/engines/postgres/schema.sql",
        "pypgflow/engines/sqlite/queries.sql",
        "pypgflow/engines/sqlite/schema.sql",
        "pypgflow/dashboard/static/htmx.min.js",
    ):
        assert path in names, path
    for engine in ("postgres", "sqlite"):
        shipped = {n for n in names if n.startswith(f"pypgflow/engines/{engine}/migrations/")}
        source = ROOT / "src" / "pypgflow" / "engines" / engine / "migrations"
        assert {Path(n).name for n in shipped} >= {p.name for p in source.glob("*.sql")}
    assert not any(n.startswith(("tests/", "bench/")) for n in names)

    assert metadata["Version"] == pypgflow.__version__
    assert set(metadata.get_all("Provides-Extra") or ()) >= {*EXTRAS, "docs", "dev"}
    requires = metadata.get_all("Requires-Dist") or []
    for extra, wanted in EXTRAS.items():
        declared = {
            r.split(";")[0].replace(" ", "") for r in requires if f"extra == '{extra}'" in r
        }
        assert declared == wanted, extra


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_each_installs_in_a_clean_virtualenv_and_runs_the_demo(
    dist: Path, tmp_path: Path, kind: str
) -> None:
    (archive,) = dist.glob("*.whl" if kind == "wheel" else "*.tar.gz")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    python = env_dir / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", archive)
    work = tmp_path / "work"
    work.mkdir()
    assert run(env_dir / "bin" / "pypgflow", "--version", cwd=work).strip() == (
        f"pypgflow, version {pypgflow.__version__}"
    )
    output = run(env_dir / "bin" / "pypgflow", "demo", cwd=work)
    assert "Summary: 5 of 5 runs completed" in output
    assert (work / "pypgflow-demo.db").exists()
    where = run(
        python,
        "-c",
        "import pathlib, pypgflow; print(pathlib.Path(pypgflow.__file__).parent)",
        cwd=work,
    ).strip()
    assert Path(where).is_relative_to(env_dir)  # the installed copy, not this checkout
    assert (Path(where) / "py.typed").exists()
    # The integrations' frameworks are extras: without them, their modules say which to install.
    for framework in ("fastapi", "django"):
        said = run(
            python,
            "-c",
            "from pypgflow.errors import ConfigurationError\n"
            f"try:\n    import pypgflow.integrations.{framework}\n"
            "except ConfigurationError as exc:\n    print(exc)",
            cwd=work,
        )
        assert f"pip install 'pypgflow[{framework}]'" in said
    # the templates ship too: a starter written by `pypgflow new` imports
    assert "Wrote etl_flow.py" in run(env_dir / "bin" / "pypgflow", "new", "etl", cwd=work)
    assert run(python, "-c", "import etl_flow; print(sorted(etl_flow.app.workflows))",
               cwd=work).strip() == "['etl']"  # fmt: skip
