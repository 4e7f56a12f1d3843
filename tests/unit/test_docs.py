"""The documentation's examples run, and print what the documentation says they print.

Every ```python block of README.md, GETTING_STARTED.md and docs/templates.md is run as a script
of its own, in a fresh interpreter and an empty working directory (as a reader would run it).
When a ```text block follows it directly, the script's standard output must match that block
exactly.

An HTML comment just before a block (invisible on a rendered page) changes how it is run:

- ``<!-- docs-test: skip (why) -->``: not run, e.g. it needs a PostgreSQL server.
- ``<!-- docs-test: file flows.py -->``: saved as ``flows.py`` in the working directory of every
  later example of the same document, which can import it. A later block marked with the same
  file name is added to its end ("add this to flows.py"). The file as it stands is run as a
  script, to show that it imports cleanly.
- ``<!-- docs-test: worker flows:app -->``: before the example runs, ``pypgflow migrate --app
  flows:app``; while it runs, ``pypgflow worker flows:app`` in the background, stopped by SIGTERM
  afterwards (and it must then exit cleanly).

PYPGFLOW_DATABASE_URL is removed from the examples' environment: an ``App()`` uses its SQLite
default, a file in the working directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.S | re.M)
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(skip|file|worker)\b\s*([^<>]*?)\s*-->\s*\Z")
DOCS = ("README.md", "GETTING_STARTED.md", "docs/templates.md")
PYPGFLOW = [sys.executable, "-m", "pypgflow.cli"]


def _examples() -> Iterator[Any]:
    for name in DOCS:
        text = (ROOT / name).read_text(encoding="utf-8")
        blocks = list(FENCE.finditer(text))
        files: dict[str, str] = {}
        for index, block in enumerate(blocks):
            if block.group(1) != "python":
                continue
            before = text[blocks[index - 1].end() if index else 0 : block.start()]
            directive = DIRECTIVE.search(before)
            kind, argument = directive.groups() if directive else ("", "")
            if kind == "skip":
                continue
            expected = None
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            if (
                following is not None
                and following.group(1) == "text"
                and not text[block.end() : following.start()].strip()
            ):
                expected = following.group(2)
            line = text.count("\n", 0, block.start()) + 1
            code, script, worker = block.group(2), "example.py", None
            if kind == "file":
                script = argument
                if argument in files:  # a later block adds to the file
                    code = f"{files[argument]}\n\n{code}"
            elif kind == "worker":
                worker = argument
            yield pytest.param(code, expected, dict(files), script, worker, id=f"{name}:{line}")
            if kind == "file":
                files[argument] = code


EXAMPLES = list(_examples())


def test_the_docs_have_examples() -> None:
    ids = [param.id for param in EXAMPLES]
    assert any(i.startswith("README.md") for i in ids)
    assert sum(i.startswith("GETTING_STARTED.md") for i in ids) >= 10
    assert sum(param.values[4] is not None for param in EXAMPLES) >= 2  # with a worker


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYPGFLOW_DATABASE_URL"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("code", "expected", "files", "script", "worker"), EXAMPLES)
def test_example(
    code: str,
    expected: str | None,
    files: dict[str, str],
    script: str,
    worker: str | None,
    tmp_path: Path,
) -> None:
    for file_name, content in files.items():
        (tmp_path / file_name).write_text(content, encoding="utf-8")
    (tmp_path / script).write_text(code, encoding="utf-8")
    env = _environment()
    process = None
    log = tmp_path / "worker.log"
    if worker is not None:
        migrated = subprocess.run(
            [*PYPGFLOW, "migrate", "--app", worker],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        with log.open("w") as output:
            process = subprocess.Popen(
                [*PYPGFLOW, "worker", worker], cwd=tmp_path, env=env, stderr=output
            )
    try:
        result = subprocess.run(
            [sys.executable, script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=50,
            check=False,
        )
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if expected is not None:
        assert result.stdout == expected
    if process is not None:
        assert process.returncode == 0, log.read_text()
