"""`make audit` (.ci/audit.py) fails on a vulnerability found, and says so plainly when nothing
could be checked, rather than passing as "No known vulnerabilities found"."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from tests.conftest import module_at

ROOT = Path(__file__).resolve().parents[2]


def audit() -> ModuleType:
    return module_at(ROOT / ".ci" / "audit.py", "ci_audit")


def test_a_vulnerability_found_fails() -> None:
    report = {
        "dependencies": [
            {"name": "fine", "version": "1.0", "vulns": []},
            {
                "name": "leaky",
                "version": "2.0",
                "vulns": [{"id": "PYSEC-0000-1", "fix_versions": ["2.1"]}],
            },
        ]
    }
    code, lines = audit().judge(report)
    assert code == 1
    assert "VULNERABLE leaky 2.0: PYSEC-0000-1 (fixed in: 2.1)" in lines
    assert lines[-1] == "audit: 1 vulnerable packages"


def test_nothing_audited_passes_but_says_nothing_was_checked() -> None:
    report = {
        "dependencies": [
            {"name": "a", "skip_reason": "Dependency not found on PyPI: a (1.0)"},
            {"name": "b", "skip_reason": "Dependency not found on PyPI: b (1.0)"},
        ]
    }
    code, lines = audit().judge(report)
    assert code == 0
    assert lines[0].startswith("2 of 2 installed packages could not be audited")
    assert lines[-1].startswith("audit: NOTHING WAS CHECKED")


def test_a_clean_audit_passes_and_counts_what_it_checked() -> None:
    report = {
        "dependencies": [
            {"name": "a", "version": "1.0", "vulns": []},
            {"name": "b", "skip_reason": "not on PyPI"},
        ]
    }
    code, lines = audit().judge(report)
    assert code == 0
    assert lines[-1] == "audit: no known vulnerabilities in 1 audited packages"
