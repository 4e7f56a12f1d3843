"""The demo: `run_demo()` and the `pypgflow demo` command, on real SQLite files in tmp_path."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pypgflow import App, RunStatus
from pypgflow.cli import main
from pypgflow.demo import (
    DEMO_DATABASE_URL,
    create_app,
    document_stats_workflow,
    llm_request_workflow,
    run_demo,
)
from pypgflow.executor import execute


def test_run_demo_runs_both_workflows_durably_and_summarises_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    out = io.StringIO()
    summary = run_demo(url, out=out, pace=0.2)
    text = out.getvalue()

    assert summary.succeeded, text
    assert summary.database_url == url
    assert summary.database_path == (tmp_path / "demo.db").resolve()
    assert [run.workflow for run in summary.runs] == ["llm_request"] * 3 + ["document_stats"] * 2
    assert [run.label for run in summary.runs] == ["llm-1", "llm-2", "llm-3", "doc-1", "doc-2"]
    llm, docs = summary.of("llm_request"), summary.of("document_stats")
    assert llm[0].result == {
        "request_id": "req-1",
        "model": "small",
        "completion": "A short answer about workflow.",
        "published": True,
    }
    assert [run.result["model"] for run in llm] == ["small", "large", "large"]
    assert all(run.retries == 1 for run in llm)  # call_llm failed once in every run
    assert all(run.steps_executed == 4 + 1 for run in llm)  # four steps and the failed attempt
    assert [run.result for run in docs] == [
        {"chunks": 4, "words": 39, "language": "en"},
        {"chunks": 3, "words": 26, "language": "en"},
    ]
    # split, one count per chunk, merge, detect_language, report; no retries
    assert [(run.steps_executed, run.retries) for run in docs] == [(8, 0), (7, 0)]
    assert (summary.completed, summary.steps_executed, summary.retries) == (5, 30, 3)
    assert all(run.duration is not None and run.duration > 0 for run in summary.runs)
    assert summary.elapsed >= max(run.duration or 0 for run in summary.runs)

    # The progress: a line per step event, with the run, step, attempt, status and duration.
    assert "call_llm                 1  failed" in text
    # the time left until the retry is due, when the line was printed: at most the backoff
    assert re.search(r"RateLimited: 429 Too Many Requests: slow down; retry in 0\.0[0-4] s", text)
    assert "call_llm                 2  completed" in text
    assert "count [x4]" in text
    assert text.count("(run)                       completed") == 5
    # The summary, where the runs are, and what to try next.
    assert "Summary: 5 of 5 runs completed" in text
    assert "30 steps executed, 3 retries" in text
    assert str(tmp_path / "demo.db") in text
    assert f"--database-url {url} runs" in text
    assert f"run {llm[0].run_id}" in text
    assert "postgresql://" in text

    # The runs outlive the demo: another App on the file sees them, with their errors.
    with App(url) as app:
        stored = {info.id: info for info in app.list_runs()}
        assert {run.run_id for run in summary.runs} <= stored.keys()
        assert all(stored[run.run_id].status is RunStatus.COMPLETED for run in summary.runs)
        call_llm = next(s for s in app.get_run(llm[0].run_id).steps if s.name == "call_llm")
        assert call_llm.attempts == 2
        assert [e.type for e in call_llm.errors] == ["RateLimited"]
        # The ids the progress lines show (started together, the runs share their first 8
        # digits) are as short as tells them apart: each names its run on the command line.
        for run in summary.runs:
            shown = next(line.split()[2] for line in text.splitlines() if f"  {run.label} " in line)
            assert run.run_id.startswith(shown)
            assert len(shown) >= 8
            assert app.resolve_run_id(shown) == run.run_id


def test_run_demo_again_counts_only_its_own_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    run_demo(url, out=io.StringIO(), pace=0.05, llm_requests=1, documents=1)
    out = io.StringIO()
    summary = run_demo(url, out=out, pace=0.05, llm_requests=1, documents=1)
    assert summary.succeeded
    assert len(summary.runs) == 2
    assert "schema     already up to date" in out.getvalue()
    with App(url) as app:
        assert len(app.list_runs()) == 4


def test_demo_workflows_are_plain_workflows() -> None:
    llm = llm_request_workflow(pace=0)
    assert list(llm.steps) == ["receive", "select_model", "call_llm", "publish"]
    result = execute(llm, {"request_id": "r", "prompt": "Why?"}, retry="step")
    assert result["published"] is True
    stats = document_stats_workflow(pace=0)
    assert stats.steps["count"].is_map
    assert execute(stats, {"text": "One two. Three."}) == {
        "chunks": 2,
        "words": 3,
        "language": "unknown",
    }


def test_create_app_takes_the_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYPGFLOW_DATABASE_URL", raising=False)
    with create_app() as app:
        assert app.url == DEMO_DATABASE_URL
        assert sorted(app.workflows) == ["document_stats", "llm_request"]
    monkeypatch.setenv("PYPGFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    with create_app() as app:
        assert app.url == f"sqlite:///{tmp_path / 'other.db'}"


def test_demo_command_stores_its_runs_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    # PYPGFLOW_DATABASE_URL is not the demo's: it keeps to its own file.
    env = {"PYPGFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'not-this.db'}"}
    result = runner.invoke(main, ["demo"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pypgflow-demo.db").exists()
    assert not (tmp_path / "not-this.db").exists()
    assert "Summary: 5 of 5 runs completed" in result.output
    assert "--database-url sqlite:///pypgflow-demo.db runs" in result.output
    listed = runner.invoke(main, ["--database-url", DEMO_DATABASE_URL, "runs"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("completed") == 5


@pytest.mark.parametrize("where", ["command option", "global option"])
def test_demo_command_database_url(tmp_path: Path, where: str) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    argv = ["demo", "--database-url", url]
    if where == "global option":
        argv = ["--database-url", url, "demo"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert f"SQLite file {tmp_path / 'elsewhere.db'}" in result.output
