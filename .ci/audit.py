"""`make audit`: the installed dependencies checked against known vulnerabilities (pip-audit).

Fails (exit 1) only when a vulnerability is found. pip-audit needs its vulnerability service
(PyPI's JSON API by default, or OSV's): when it cannot reach it, or the service knows none of
the packages (a private mirror answers in its place), nothing was checked, and this says so on
its last line rather than passing silently as "No known vulnerabilities found".
Arguments go to pip-audit (e.g. `make audit ARGS='-s osv'`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def judge(report: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit code and the lines to print for a pip-audit JSON report."""
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    lines = []
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            lines.append(
                f"VULNERABLE {dependency['name']} {dependency.get('version', '?')}: "
                f"{vuln.get('id', '?')} (fixed in: {fixed})"
            )
    if skipped:
        lines.append(
            f"{len(skipped)} of {len(dependencies)} installed packages could not be audited, "
            f"e.g. {skipped[0]['skip_reason']}"
        )
    if vulnerable:
        lines.append(f"audit: {len(vulnerable)} vulnerable packages")
        return 1, lines
    if audited == 0:
        lines.append(
            "audit: NOTHING WAS CHECKED: the vulnerability service is unreachable from here or "
            "knows none of these packages (no vulnerability found, none ruled out)"
        )
    else:
        lines.append(f"audit: no known vulnerabilities in {audited} audited packages")
    return 0, lines


def main(arguments: list[str]) -> int:
    command = [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"]
    command += ["--skip-editable", *arguments]  # pypgflow itself is this checkout
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603  a fixed command, no shell
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(
            f"audit: NOTHING WAS CHECKED: pip-audit could not reach its vulnerability service: {last}"
        )
        return 0
    code, lines = judge(report)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
