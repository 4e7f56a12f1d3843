"""bench/scale.py loads its history in SQL: the rows must be what the engine itself would
have left, or the benchmark measures another schema. Each loaded run reads back as a finished
run, with its step, output, attempts and errors."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from pypgflow import RunStatus
from pypgflow.app import App

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import scale

pytestmark = pytest.mark.timeout(60)


def test_the_loaded_history_reads_as_the_engine_left_it(pg_url: str) -> None:
    app = App(pg_url, workflows=[scale.one_step])
    try:
        app.migrate()
        scale.load_history(pg_url, 300)
        runs = app.list_runs(limit=500)
        assert len(runs) == 300
        assert {r.status for r in runs} == {RunStatus.COMPLETED, RunStatus.FAILED}
        ids = [uuid.UUID(r.id) for r in runs]
        assert {i.version for i in ids} == {7}
        # newest first, and UUIDv7 order is creation order
        assert [r.created_at for r in runs] == sorted((r.created_at for r in runs), reverse=True)
        assert sorted(ids, reverse=True) == ids
        done = app.get_run(next(r.id for r in runs if r.status is RunStatus.COMPLETED))
        (step,) = done.steps
        assert step.name == "noop"
        assert step.output == done.output == done.input
        failed = app.get_run(next(r.id for r in runs if r.status is RunStatus.FAILED))
        assert failed.error is not None
        assert failed.error.type == "ValueError"
        (step,) = failed.steps
        assert [e.attempt for e in step.errors] == [1, 2, 3]
        assert app.retry(failed.id)  # the engine can act on a loaded run
        assert app.get_run(failed.id).status is RunStatus.PENDING
    finally:
        app.close()
