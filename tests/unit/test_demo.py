"""The demo: `run_demo()` and the `pypgflow demo` command."""

from __future__ import annotations

import io
import logging

from click.testing import CliRunner

from pypgflow.cli import main
from pypgflow.demo import document_stats_workflow, llm_request_workflow, run_demo
from pypgflow.executor import execute


def test_run_demo_runs_both_workflows_and_summarises_them() -> None:
    out = io.StringIO()
    level = logging.getLogger("pypgflow").level
    summary = run_demo(out=out, pace=0.05)
    text = out.getvalue()

    assert [run.workflow for run in summary.runs] == ["llm_request", "document_stats"]
    llm, stats = summary.runs
    assert llm.result == {
        "request_id": "req-1",
        "model": "small",
        "completion": "A short answer about workflow.",
        "published": True,
    }
    assert llm.retries == 1  # call_llm failed once, retried alone
    assert llm.step_runs == 4
    assert stats.result == {"chunks": 4, "words": 38, "language": "en"}
    assert stats.retries == 0
    assert stats.step_runs == 4 + 4  # split, 4 map elements, merge, detect_language, report
    assert summary.retries == 1
    assert summary.step_runs == 12
    assert summary.elapsed >= llm.elapsed + stats.elapsed
    assert len(llm.run_id) == 32

    assert "!! call_llm" in text
    assert "RateLimited: 429 Too Many Requests" in text
    assert "-> retrying call_llm" in text
    assert "ok count[3]" in text
    assert "Summary" in text
    assert "retries    1" in text
    assert "make test" in text
    # The demo's handler is gone and the logger's level is back as it was.
    assert logging.getLogger("pypgflow").level == level
    assert not any(type(h).__name__ == "_Progress" for h in logging.getLogger("pypgflow").handlers)


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


def test_demo_command() -> None:
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert "llm_request" in result.output
    assert "document_stats" in result.output
    assert "runs       2 succeeded" in result.output
    assert "Next:" in result.output
