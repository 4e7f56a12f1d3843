"""MkDocs hooks of the documentation site: a page that is one of the repository's documents.

A page whose source is the line ``--8<-- "README.md"`` shows that document, read from the
repository's root when the site is built: the text lives in one place. Its links, written for the
repository (where GitHub renders them), are rewritten to point at the site's pages: a root
document's page, or ``docs/x`` as the site's ``x``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: the repository's documents, by their path from the repository's root, and their page
PAGES = {
    "README.md": "index.md",
    "GETTING_STARTED.md": "getting-started.md",
    "ARCHITECTURE.md": "architecture.md",
    "CHANGELOG.md": "changelog.md",
    "RELIABILITY.md": "reliability.md",
}
INCLUDE = re.compile(r'^--8<-- "([^"]+)"\s*$', re.M)
LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)#\s]+)(#[^)\s]*)?\)")


def site_link(target: str) -> str:
    """A link of a repository document (relative to the root) as a link of its page."""
    if target in PAGES:
        return PAGES[target]
    if target.startswith("docs/"):
        return target.removeprefix("docs/")
    return target


def included(markdown: str) -> str:
    """``markdown`` with each ``--8<-- "FILE"`` line replaced by that document, its links
    rewritten for the site."""

    def document(match: re.Match[str]) -> str:
        name = match[1]
        if name not in PAGES:
            raise ValueError(f"{name!r} is not one of the documents the site shows: {list(PAGES)}")
        text = (ROOT / name).read_text(encoding="utf-8")
        return LINK.sub(lambda m: f"]({site_link(m[1])}{m[2] or ''})", text)

    return INCLUDE.sub(document, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return included(markdown)
