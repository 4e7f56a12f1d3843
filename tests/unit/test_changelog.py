"""CHANGELOG.md keeps the form of Keep a Changelog 1.1.0: an Unreleased section first, then
releases newest first, each `## [X.Y.Z] - YYYY-MM-DD`, their changes under the six kinds it
names, in its order; the version in the code is the newest release's, or a development version
after it."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.version import Version

import pypgflow

ROOT = Path(__file__).resolve().parents[2]
KINDS = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
RELEASE = re.compile(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})")


def sections() -> list[tuple[str, list[str]]]:
    """``(version heading, [kind headings])`` in the order of the file."""
    found: list[tuple[str, list[str]]] = []
    for line in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            found.append((line[3:].strip(), []))
        elif line.startswith("### "):
            assert found, f"{line!r} comes before any version"
            found[-1][1].append(line[4:].strip())
    return found


def test_the_changelog_keeps_its_form() -> None:
    found = sections()
    assert found[0][0] == "[Unreleased]"
    releases = [RELEASE.fullmatch(heading) for heading, _ in found[1:]]
    assert all(releases), [h for h, _ in found[1:]]
    versions = [tuple(map(int, m.group(1).split("."))) for m in releases if m]
    assert versions == sorted(versions, reverse=True)
    for heading, kinds in found:
        assert kinds, f"{heading} lists no change"
        assert all(kind in KINDS for kind in kinds), (heading, kinds)
        assert kinds == sorted(kinds, key=KINDS.index), (heading, kinds)
        assert len(set(kinds)) == len(kinds), (heading, kinds)
    assert Version(pypgflow.__version__)  # a version pip understands
    if releases and releases[0]:
        newest = releases[0].group(1)
        assert Version(pypgflow.__version__) >= Version(newest)
