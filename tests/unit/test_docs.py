"""The documentation's examples run, and print what the documentation says they print.

Every ```python block of README.md and GETTING_STARTED.md is run as a script of its own, in a fresh
interpreter (as a reader would run it). When a ```text block follows it directly, the script's
standard output must match that block exactly.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.S | re.M)
DOCS = ("README.md", "GETTING_STARTED.md")


def _examples() -> Iterator[Any]:
    for name in DOCS:
        text = (ROOT / name).read_text(encoding="utf-8")
        blocks = list(FENCE.finditer(text))
        for index, block in enumerate(blocks):
            if block.group(1) != "python":
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
            yield pytest.param(block.group(2), expected, id=f"{name}:{line}")


EXAMPLES = list(_examples())


def test_the_docs_have_examples() -> None:
    ids = [param.id for param in EXAMPLES]
    assert any(i.startswith("README.md") for i in ids)
    assert sum(i.startswith("GETTING_STARTED.md") for i in ids) >= 10


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("code", "expected"), EXAMPLES)
def test_example(code: str, expected: str | None, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    if expected is not None:
        assert result.stdout == expected
