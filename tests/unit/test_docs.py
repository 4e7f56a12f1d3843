"""The documentation's examples run, and print what the documentation says they print.

Every ```python block of README.md, GETTING_STARTED.md, docs/templates.md and the site's own
pages (``PAGES``: every docs/**.md but the stubs that include the repository's documents and the
reference made from the code, so the tutorial, the concepts, the how-to guides, the benchmarks,
the dashboard, telemetry, the integrations, security, and any page added later) is run as a
script of its own, in a fresh interpreter and an empty working directory (as a reader would run
it). On the site's pages every shell block (```sh, ```bash) runs too, with bash in that
directory and pypgflow's command on the PATH, unless it says why it does not. When a ```text
block follows a block directly, the block's standard output must match it exactly.

An HTML comment just before a block (invisible on a rendered page) changes how it is run:

- ``<!-- docs-test: skip (why) -->``: not run, e.g. it needs a PostgreSQL server, or serves until
  Ctrl-C. On the site's pages the reason is required.
- ``<!-- docs-test: file flows.py -->``: saved as ``flows.py`` in the working directory of every
  later example of the same document, which can import it. A later block marked with the same
  file name is added to its end ("add this to flows.py"). A Python file as it stands is run as a
  script, to show that it imports cleanly; a file of another kind (```json) is only saved.
- ``<!-- docs-test: worker flows:app -->``: before the example runs, ``pypgflow migrate --app
  flows:app``; while it runs, ``pypgflow worker flows:app`` in the background, stopped by SIGTERM
  afterwards (and it must then exit cleanly).
- ``<!-- docs-test: repository -->``: run in the repository's root rather than an empty
  directory, for a command about the repository itself (``python bench/...``); it must write
  nothing there.

A document with the line ``<!-- docs-test: sequence -->`` is one test: its examples run in order
in one working directory, each seeing what the ones before it left (the database, the files), as
a reader following it step by step would.

PYPGFLOW_DATABASE_URL is removed from the examples' environment: an ``App()`` uses its SQLite
default, a file in the working directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.S | re.M)
DIRECTIVE = re.compile(
    r"<!--\s*docs-test:\s*(skip|file|worker|repository)\b\s*([^<>]*?)\s*-->\s*\Z"
)
SEQUENCE = "<!-- docs-test: sequence -->"
SHELLS = ("sh", "bash")
DOCS = ("README.md", "GETTING_STARTED.md", "docs/templates.md")
PAGES = tuple(  # the site's own pages: not an included document, nor the generated reference
    str(path.relative_to(ROOT))
    for path in sorted((ROOT / "docs").rglob("*.md"))
    if str(path.relative_to(ROOT)) not in DOCS
    and path.parent.name != "reference"
    and not path.read_text(encoding="utf-8").startswith('--8<-- "')
)
PYPGFLOW = [sys.executable, "-m", "pypgflow.cli"]


@dataclass(frozen=True)
class Example:
    """One block to run: its code, what it must print, and how to run it."""

    where: str  # document:line
    language: str
    code: str
    expected: str | None
    file: str | None  # the file it is saved as (``file`` directive), None for a script
    worker: str | None  # MODULE:APP of the worker running beside it
    in_repository: bool = False  # run in the repository's root

    @property
    def runs(self) -> bool:
        return self.file is None or self.language == "python"


@dataclass(frozen=True)
class Skipped:
    where: str
    language: str
    reason: str


def _blocks(name: str) -> Iterator[Example | Skipped]:
    text = (ROOT / name).read_text(encoding="utf-8")
    runnable = ("python", *SHELLS) if name in PAGES else ("python",)
    blocks = list(FENCE.finditer(text))
    files: dict[str, str] = {}
    for index, block in enumerate(blocks):
        language = block.group(1)
        before = text[blocks[index - 1].end() if index else 0 : block.start()]
        directive = DIRECTIVE.search(before)
        kind, argument = directive.groups() if directive else ("", "")
        where = f"{name}:{text.count(chr(10), 0, block.start()) + 1}"
        if kind == "skip":
            yield Skipped(where, language, argument)
            continue
        if language not in runnable and kind != "file":
            continue
        expected = None
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if (
            following is not None
            and following.group(1) == "text"
            and not text[block.end() : following.start()].strip()
        ):
            expected = following.group(2)
        code = block.group(2)
        if kind == "file" and argument in files:  # a later block adds to the file
            code = f"{files[argument]}\n\n{code}"
        if kind == "file":
            files[argument] = code
        yield Example(
            where,
            language,
            code,
            expected,
            argument if kind == "file" else None,
            argument if kind == "worker" else None,
            kind == "repository",
        )


def _examples(name: str) -> list[Example]:
    return [block for block in _blocks(name) if isinstance(block, Example)]


def _is_sequence(name: str) -> bool:
    return SEQUENCE in (ROOT / name).read_text(encoding="utf-8")


def _separate_examples() -> Iterator[object]:
    """Each example of a document that is not a sequence, with the files saved before it."""
    for name in (*DOCS, *PAGES):
        if _is_sequence(name):
            continue
        files: dict[str, str] = {}
        for example in _examples(name):
            if example.runs:
                yield pytest.param(example, dict(files), id=example.where)
            if example.file is not None:
                files[example.file] = example.code


EXAMPLES = list(_separate_examples())
SEQUENCES = [name for name in PAGES if _is_sequence(name)]


def test_the_docs_have_examples() -> None:
    examples = [param.values[0] for param in EXAMPLES]  # type: ignore[attr-defined]
    assert any(e.where.startswith("README.md") for e in examples)
    assert sum(e.where.startswith("GETTING_STARTED.md") for e in examples) >= 10
    assert sum(e.worker is not None for e in examples) >= 2
    assert "docs/tutorial.md" in SEQUENCES
    own = {"concepts", "benchmarks", "dashboard", "telemetry", "integrations", "security"}
    assert {f"docs/{name}.md" for name in own} | {"docs/how-to/scale-out.md"} <= set(PAGES)
    assert not {"docs/index.md", "docs/reference/api.md", "docs/templates.md"} & set(PAGES)
    tutorial = _examples("docs/tutorial.md")
    assert sum(e.language in SHELLS for e in tutorial) >= 3
    assert sum(e.worker is not None for e in tutorial) >= 3
    for page in PAGES:
        assert any(e.runs for e in _examples(page)), f"{page} runs no example"


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_block_of_a_page_runs_or_says_why_not(page: str) -> None:
    for block in _blocks(page):
        if isinstance(block, Skipped):
            assert re.fullmatch(r"\(.+\)", block.reason), f"{block.where}: skip without a reason"


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYPGFLOW_DATABASE_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _wait_until_started(process: subprocess.Popen[bytes], log: Path, where: str) -> None:
    """Until the worker says it started: its signal handlers are in place, it is registered."""
    deadline = time.monotonic() + 20
    while " started: queues " not in log.read_text():
        assert process.poll() is None, f"{where}: the worker exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"{where}: the worker did not start: {log.read_text()}"
        time.sleep(0.05)


def _run(example: Example, directory: Path) -> None:
    """Run one example in ``directory`` (its files already there), checking what it prints."""
    env = _environment()
    process = None
    log = directory / "worker.log"
    if example.in_repository:  # a command, which writes nothing there
        assert example.language in SHELLS, f"{example.where}: only commands run in the repository"
        directory = ROOT
    if example.worker is not None:
        migrated = subprocess.run(
            [*PYPGFLOW, "migrate", "--app", example.worker],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert migrated.returncode == 0, f"{example.where}: {migrated.stderr}"
        with log.open("w") as output:
            process = subprocess.Popen(
                [*PYPGFLOW, "worker", example.worker], cwd=directory, env=env, stderr=output
            )
        _wait_until_started(process, log, example.where)
    if example.language == "python":
        script = example.file or "example.py"
        (directory / script).write_text(example.code, encoding="utf-8")
        command = [sys.executable, script]
    else:
        command = ["bash", "-euo", "pipefail", "-c", example.code]
    try:
        result = subprocess.run(
            command, cwd=directory, env=env, capture_output=True, text=True, timeout=50, check=False
        )
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert result.returncode == 0, f"{example.where}: {result.stderr}"
    if example.language == "python":  # a command may tell its progress on stderr
        assert result.stderr == "", example.where
    if example.expected is not None:
        assert result.stdout == example.expected, example.where
    if process is not None:
        assert process.returncode == 0, f"{example.where}: {log.read_text()}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("example", "files"), EXAMPLES)
def test_example(example: Example, files: dict[str, str], tmp_path: Path) -> None:
    for file_name, content in files.items():
        (tmp_path / file_name).write_text(content, encoding="utf-8")
    if example.file is not None:
        (tmp_path / example.file).write_text(example.code, encoding="utf-8")
    _run(example, tmp_path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", SEQUENCES)
def test_a_sequence_runs_in_order(page: str, tmp_path: Path) -> None:
    for example in _examples(page):
        if example.file is not None:
            (tmp_path / example.file).write_text(example.code, encoding="utf-8")
        if example.runs:
            _run(example, tmp_path)
