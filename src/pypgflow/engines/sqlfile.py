"""Named SQL blocks: a ``.sql`` file split on ``-- name: NAME`` lines into a dict of statements."""

from __future__ import annotations

import re
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(package: str, filename: str) -> dict[str, str]:
    """The statements of ``package/filename`` by name, comments and all (the server ignores them)."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";")
    return queries


def read_sql(package: str, filename: str) -> str:
    return resources.files(package).joinpath(filename).read_text(encoding="utf-8")


def migration_files(package: str) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every ``NNNN_name.sql`` in ``package``, in version order."""
    found = []
    for entry in resources.files(package).iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"{package}: migration versions must run 1, 2, 3 ... without gaps")
    return found
