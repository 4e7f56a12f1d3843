"""Named SQL blocks: a ``.sql`` file split on ``-- name: NAME`` lines into a dict of statements,
with the expressions its header defines expanded; and the numbered migrations of a package."""

from __future__ import annotations

import re
from collections.abc import Collection
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_DEFINE_LINE = re.compile(r"^-- define: (\w+) = (.+?)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def load_queries(
    package: str, filename: str, *, composed_later: Collection[str] = ()
) -> dict[str, str]:
    """The statements of ``package/filename`` by name, comments and all (the server ignores them).

    The file's header (what precedes its first name line) may define expressions, one a line:
    ``-- define: NAME = SQL``. Each ``{NAME}`` in a statement is replaced by its expression, so
    that the statements loaded are plain SQL. A placeholder that is neither defined nor one of
    ``composed_later`` (names the engine fills in itself, e.g. PostgreSQL's ``{schema}``) is an
    error here rather than when the statement first runs.
    """
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    defined: dict[str, str] = dict(_DEFINE_LINE.findall(parts[0]))

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in defined:
            return defined[name]
        if name in composed_later:
            return match.group(0)
        raise ValueError(f"{filename}: {{{name}}} is not defined in the file's header")

    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} is defined twice")
        queries[name] = _PLACEHOLDER.sub(expand, body.strip().rstrip(";"))
    return queries


def read_sql(package: str, filename: str) -> str:
    """The text of ``package/filename`` (a schema script)."""
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
