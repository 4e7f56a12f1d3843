"""Numbers come back alike from both engines, by one rule (GETTING_STARTED, "Inputs and outputs
are stored as JSON"): PostgreSQL's jsonb stores a number as its exact decimal, so a float whose
JSON text has an exponent and no fractional digits once the exponent is applied comes back an
int, and -0.0 comes back 0.0; SQLite's reader decodes floats the same way."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pypgflow import Workflow
from pypgflow.app import App
from pypgflow.engines.sqlite.engine import SqliteEngine
from pypgflow.serialization import loads, stored_number
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(60)

#: (what is stored, what comes back): checked against the server with
#: select '1.5e+16'::jsonb, '1e-07'::jsonb, '-0.0'::jsonb, ...
TRICKY: list[tuple[Any, Any]] = [
    (1e20, 100000000000000000000),  # '1e+20': an exponent, no fraction left
    (1.5e16, 15000000000000000),  # '1.5e+16'
    (-1.5e16, -15000000000000000),
    (1e16, 10000000000000000),
    (1.2345678901234568e17, 123456789012345680),
    (1.7976931348623157e308, int(Decimal("1.7976931348623157e308"))),  # the largest float
    (-0.0, 0.0),  # jsonb has no negative zero
    (0.0, 0.0),
    (1e15, 1e15),  # '1000000000000000.0': no exponent, a fraction: stays a float
    (1e-7, 1e-7),  # '1e-07': fractional digits left after the exponent
    (-2.5e-5, -2.5e-5),
    (5e-324, 5e-324),  # the smallest float
    (1.25, 1.25),
    (0.1, 0.1),
    (1.0, 1.0),
    (-1.0, -1.0),
    (10**30, 10**30),  # integers are integers, however large
    (-(2**63), -(2**63)),
    (0, 0),
]


def same(a: Any, b: Any) -> bool:
    """Equal, of the same type, and the same sign of zero."""
    if type(a) is not type(b) or a != b:
        return False
    return not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b)


def numbers_flow() -> Workflow:
    flow = Workflow("numbers")

    @flow.step
    def first(input: Any) -> dict[str, Any]:
        # the input as the step got it, and the same numbers made by the step itself
        return {"given": input, "made": [value for value, _ in TRICKY]}

    @flow.step
    def second(first: dict[str, Any]) -> dict[str, Any]:
        return {**first, "types": [type(v).__name__ for v in first["given"]]}

    return flow


def round_trip(app: App) -> tuple[Any, Any, Any]:
    """The tricky numbers through a run: its input, a step, a dependency, its output."""
    stored = [value for value, _ in TRICKY]
    run = app.start("numbers", stored)
    with running_worker(app):
        output = run.result(timeout=20)
    return app.get_run(run.id).input, output, stored


def assert_the_rule(app: App) -> dict[str, Any]:
    expected = [back for _, back in TRICKY]
    run_input, output, _ = round_trip(app)
    for got in (run_input, output["given"], output["made"]):
        mismatched = [(e, g) for e, g in zip(expected, got, strict=True) if not same(e, g)]
        assert mismatched == []
    # what the step was given is what the rule says, too (the first step saw its types)
    assert output["types"] == [type(back).__name__ for back in expected]
    return dict(output)


def test_tricky_numbers_come_back_by_the_documented_rule(
    make_app: Callable[..., App],
) -> None:
    assert_the_rule(make_app(numbers_flow()))


@pytest.fixture
def both_engines(pg_url: str, tmp_path: Path) -> Iterator[tuple[App, App]]:
    path = tmp_path / "numbers.db"
    engine = SqliteEngine(path)
    engine.migrate()
    engine.close()
    postgres = App(pg_url, workflows=[numbers_flow()])
    sqlite = App(f"sqlite:///{path}", workflows=[numbers_flow()])
    yield postgres, sqlite
    postgres.close()
    sqlite.close()


def test_both_engines_give_back_the_same_numbers(both_engines: tuple[App, App]) -> None:
    postgres, sqlite = both_engines
    from_postgres, from_sqlite = (round_trip(app)[:2] for app in (postgres, sqlite))
    for a, b in zip(from_postgres, from_sqlite, strict=True):
        assert a == b
    pg_input, pg_output = from_postgres
    sqlite_input, sqlite_output = from_sqlite
    assert [same(a, b) for a, b in zip(pg_input, sqlite_input, strict=True)] == [True] * len(TRICKY)
    for key in ("given", "made"):
        pairs = zip(pg_output[key], sqlite_output[key], strict=True)
        assert [same(a, b) for a, b in pairs] == [True] * len(TRICKY)


def test_the_reader_rule_matches_jsonb_on_the_server(pg_url: str) -> None:
    """stored_number against PostgreSQL itself, on texts Python writes and texts it does not."""
    import psycopg

    texts = [
        "1.5e16", "1e-7", "-0.0", "1.25e1", "1e20", "1.0", "2.50", "1E2", "1.5E-3", "0.1e1",
        "12.3e-1", "1.0e0", "100e-2", "0e5", "-0e0", "1.5e+16", "-1e-07", "123.0e-1", "7e0",
    ]  # fmt: skip
    with psycopg.connect(pg_url) as conn:
        back = [row[0] for row in conn.execute("select unnest(%s::text[])::jsonb", [texts])]
    mine = [stored_number(text) for text in texts]
    assert [same(a, b) for a, b in zip(back, mine, strict=True)] == [True] * len(texts)
    assert loads("[1e+20, -0.0, 2]") == [100000000000000000000, 0.0, 2]
