"""`pypgflow new TEMPLATE`: the starter module it writes imports, registers its workflow on an
App from PYPGFLOW_DATABASE_URL, and a worker runs its first run to completion (in this process,
and as a real `pypgflow worker MODULE:app` process); it never overwrites without --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypgflow.app import App
from pypgflow.cli import load_app
from pypgflow.defaults import DATABASE_URL_ENV
from pypgflow.templates import TEMPLATES, template
from tests.cli.conftest import Invoke, eventually
from tests.conftest import running_worker
from tests.http_answers import http_answers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty current directory, importable; the starters imported from it forgotten after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", "") and str(tmp_path) in str(
            sys.modules[name].__file__
        ):
            del sys.modules[name]


def test_new_lists_the_templates(cli: Invoke, here: Path) -> None:
    result = cli("new", "--list")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(TEMPLATES)
    assert list(here.iterdir()) == []


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_new_writes_a_starter_whose_first_run_completes(
    cli: Invoke, here: Path, pg_url: str, name: str
) -> None:
    module = f"starter_{name}"
    result = cli("new", name, "--name", module)
    assert result.exit_code == 0, result.output
    assert f"Wrote {module}.py from the template {name}" in result.stdout
    assert f"pypgflow worker {module}:app" in result.stdout
    assert (here / f"{module}.py").read_text() == template(name).starter(module)

    app = load_app(f"{module}:app", database_url=pg_url)
    try:
        assert app.url == pg_url  # App() took PYPGFLOW_DATABASE_URL
        assert name in app.workflows
        example = json.loads(template(name).example(module))
        with http_answers() as receiver:
            if name == "webhook":  # no network: the delivery goes to a local receiver
                example["url"] = receiver.url + "/hooks"
            run = app.start(name, example)
            with running_worker(app, poll_interval=0.05):
                out = run.result(timeout=30)
        assert app.get_run(run.id).status == "completed"
        assert out is not None
        if name == "webhook":
            assert out["status"] == 200
            assert json.loads(receiver.received[0].body) == example["payload"]
        if name == "map_reduce":
            assert out["sources"] == 1  # the starter counted its own words
            assert out["words"] > 50
        if name == "report":
            # the worker stored the starter's schedule: its leader starts a run every day at 8
            assert [(s.name, s.cron) for s in app.schedules()] == [("report", "0 8 * * *")]
    finally:
        app.close()


def test_new_refuses_to_overwrite_without_force(cli: Invoke, here: Path) -> None:
    (here / "webhook_flow.py").write_text("# mine\n")
    refused = cli("new", "webhook")
    assert refused.exit_code == 1
    assert "webhook_flow.py exists already: pass --force to overwrite it" in refused.stderr
    assert (here / "webhook_flow.py").read_text() == "# mine\n"
    forced = cli("new", "webhook", "--force")
    assert forced.exit_code == 0, forced.output
    assert "webhook_workflow(" in (here / "webhook_flow.py").read_text()
    assert sorted(p.name for p in here.iterdir()) == ["webhook_flow.py"]  # no temporary left


def test_new_explains_bad_names(cli: Invoke, here: Path) -> None:
    unknown = cli("new", "cron_job")
    assert unknown.exit_code == 1
    assert (
        "no template named 'cron_job': choose one of llm_request, webhook, etl, map_reduce, "
        "saga, report" in unknown.stderr
    )
    for bad in ("my-flow", "class", "json", "pypgflow"):
        result = cli("new", "etl", "--name", bad)
        assert result.exit_code == 1, bad
        assert f"--name {bad!r}" in result.stderr
    missing = cli("new")
    assert missing.exit_code == 2
    assert "name a template" in missing.stderr
    assert list(here.iterdir()) == []


def _pypgflow() -> list[str]:
    script = Path(sys.executable).parent / "pypgflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pypgflow.cli"]


@pytest.mark.slow
def test_a_worker_process_runs_a_starter(cli: Invoke, here: Path, pg_url: str) -> None:
    assert cli("new", "saga").exit_code == 0
    env = {**os.environ, DATABASE_URL_ENV: pg_url}
    process = subprocess.Popen(
        [*_pypgflow(), "worker", "saga_flow:app", "--poll-interval", "0.2",
         "--instance-id", "starter-worker", "--shutdown-timeout", "10"],
        cwd=here, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with App(pg_url) as app:  # no code here: the run starts from the stored definition
            eventually(lambda: any(i.instance_id == "starter-worker" for i in app.instances()), 30)
            run = app.start("saga", {"trip": "Lisbon"})
            assert run.result(timeout=30)["reserve_hotel"] == "hotel in Lisbon"
            failed = app.start("saga", {"trip": "Lisbon", "fail_at": "charge_card"})
            with pytest.raises(Exception, match="failed at action 'charge_card'"):
                failed.result(timeout=30)
            assert {s.instance_id for s in app.get_run(run.id).steps if s.attempts} == {
                "starter-worker"
            }
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
