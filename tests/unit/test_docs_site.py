"""The documentation site (mkdocs.yml): it builds with warnings as errors (a broken link or
anchor, a page missing from the navigation, a docstring mkdocstrings cannot read), its pages
show the repository's documents rather than copies, with their links pointing at the pages, and
its references come from the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.conftest import module_at

ROOT = Path(__file__).resolve().parents[2]


def hooks() -> ModuleType:
    return module_at(ROOT / "docs" / "hooks.py", "docs_hooks")


def test_a_page_shows_a_document_with_its_links_for_the_site() -> None:
    page = hooks().included('--8<-- "README.md"\n')
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert page.splitlines()[0] == readme.splitlines()[0]
    assert len(page.splitlines()) == len(readme.splitlines())
    assert "](GETTING_STARTED.md" not in page
    assert "](getting-started.md#part-2-durable-runs)" in page
    assert "](dashboard.md)" in page
    assert "](screenshots/run.png)" in page


def test_only_the_repositorys_documents_are_shown() -> None:
    with pytest.raises(ValueError, match=r"'setup\.py' is not one of the documents"):
        hooks().included('--8<-- "setup.py"')


def test_each_stub_page_is_a_document_and_nothing_else() -> None:
    pages = hooks().PAGES
    for document, page in pages.items():
        assert (ROOT / "docs" / page).read_text(encoding="utf-8") == f'--8<-- "{document}"\n'


def test_the_navigation_goes_from_a_first_read_to_the_reference() -> None:
    """A reader meets the tutorial and the concepts before the guides and the reference; every
    page of the site's own (docs/**.md besides the included documents) is in the navigation."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    titles = [next(iter(entry)) for entry in nav]
    order = ["Home", "Tutorial", "Concepts", "How-to guides", "Dashboard", "Telemetry"]
    order += ["Benchmarks", "Architecture", "Reference", "Changelog"]
    assert [title for title in titles if title in order] == order

    def pages(entries: list[dict[str, object]]) -> set[str]:
        found: set[str] = set()
        for entry in entries:
            (value,) = entry.values()
            found |= pages(value) if isinstance(value, list) else {str(value)}
        return found

    own = {str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")}
    assert own <= pages(nav), own - pages(nav)


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("resolve_run_id", "start_many", "WorkflowFailed", "AmbiguousRunId"):
        assert name in api, name
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for usage in ("pypgflow runs", "pypgflow schedules delete", "--run-at", "--since"):
        assert usage in cli, usage
    index = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="getting-started/' in index
    assert 'href="how-to/scale-out/' in index  # README's link to docs/how-to/scale-out.md
    postgresql = (site / "how-to" / "postgresql" / "index.html").read_text(encoding="utf-8")
    assert "pool_mode = session" in postgresql
