"""SQLite URLs and paths: every accepted form, and a clear ConfigurationError for the rest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pypgflow.engines.sqlite import SqliteEngine, sqlite_path_from_url
from pypgflow.errors import ConfigurationError


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///flows.db", "flows.db"),
        ("sqlite:///data/flows.db", "data/flows.db"),
        ("sqlite:////var/lib/app/flows.db", "/var/lib/app/flows.db"),
        ("sqlite:////tmp/with%20space.db", "/tmp/with space.db"),
        ("sqlite:///flows.db?synchronous=normal", "flows.db"),
        ("SQLite:///flows.db", "flows.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_accepted_urls(url: str, path: str) -> None:
    assert sqlite_path_from_url(url) == path


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:////", "names a directory"),
        ("sqlite://flows.db", "has no host"),
        ("sqlite://localhost/flows.db", "has no host"),
        ("sqlite:flows.db", "not a SQLite URL"),
        ("postgresql://u@h/db", "not a SQLite URL"),
        ("sqlite:///flows.db?synchronous=sometimes", "synchronous must be one of full, normal"),
        ("sqlite:///flows.db?journal=delete", "unknown option 'journal'"),
        ("sqlite:///flows.db?synchronous", "malformed options"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as info:
        sqlite_path_from_url(url)
    assert "write sqlite:///relative/path.db, sqlite:////absolute/path.db" in str(info.value)


def test_engine_takes_paths_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SqliteEngine("sqlite:///rel.db")
    # Resolved once: a later chdir does not move the database of new connections.
    assert relative.path == str(tmp_path / "rel.db")
    absolute = SqliteEngine(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.path == str(tmp_path / "abs.db")
    assert SqliteEngine(tmp_path / "p.db").path == str(tmp_path / "p.db")
    assert SqliteEngine("plain.db").path == os.path.join(str(tmp_path), "plain.db")
    assert SqliteEngine("sqlite:///x.db").synchronous == "full"
    assert SqliteEngine("sqlite:///x.db?synchronous=NORMAL").synchronous == "normal"
    assert SqliteEngine("x.db", synchronous="normal").synchronous == "normal"
    memory = SqliteEngine("sqlite://:memory:")
    assert memory.memory
    assert memory.path == ":memory:"
    assert not memory.notifies_other_processes
    assert relative.notifies_other_processes
    assert not relative.supports_transactional_start
    with pytest.raises(ConfigurationError, match="needs a database path"):
        SqliteEngine("")
    with pytest.raises(ConfigurationError, match="synchronous must be"):
        SqliteEngine("x.db", synchronous="off")
    for engine in (relative, absolute, memory):
        engine.close()
    assert not list(tmp_path.iterdir())  # constructing opens nothing
