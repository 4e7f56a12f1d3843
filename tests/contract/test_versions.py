"""Workflow versions: a run keeps the version it started on and is run only by workers that
have that version's code, several versions live side by side, and a process without the code
starts a workflow from its stored blueprint; on every engine."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pypgflow import (
    InvalidArgument,
    ResultTimeout,
    SerializationError,
    UnknownWorkflow,
    Workflow,
)
from pypgflow.app import App
from pypgflow.insight import RunFilter
from pypgflow.status import RunStatus
from tests.conftest import running_worker

pytestmark = pytest.mark.timeout(30)


def charge(version: str | None, *, renamed: bool = False) -> Workflow:
    flow = Workflow("charge", version=version)
    flow.step(name="reserve")(lambda input: input["amount"])
    flow.step(name="settle" if renamed else "capture")(
        lambda reserve: f"{reserve} charged by {version or 'the fingerprinted version'}"
    )
    return flow


def test_a_run_waits_for_a_worker_of_its_version_and_never_fails_for_it(
    make_app: Callable[..., App],
) -> None:
    old, new = charge("1"), charge("2", renamed=True)
    v1, v2 = make_app(old), make_app(new)
    v1.migrate()
    run = v1.start("charge", {"amount": 5})
    assert v1.get_run(run.id).version == "1"
    # the deploy's new worker: not its version
    with running_worker(v2):
        with pytest.raises(ResultTimeout):
            run.result(timeout=1.0)
        (instance,) = v2.instances()
        assert instance.versions == ("charge@2",)
        waiting = v1.get_run(run.id)
        assert (waiting.status, waiting.waiting_for_version) == (RunStatus.PENDING, True)
        listed = v1.with_waiting(v1.engine.find_runs(RunFilter(workflow="charge"), limit=5).runs)
        assert [(r.id, r.version, r.waiting_for_version) for r in listed] == [(run.id, "1", True)]
    with running_worker(v1):  # an old worker comes back: the run finishes on its version
        assert run.result(timeout=10) == "5 charged by 1"
        assert v1.get_run(run.id).waiting_for_version is False


def test_versions_side_by_side_and_start_picks_the_newest_or_the_one_named(
    make_app: Callable[..., App],
) -> None:
    old, new = charge("1"), charge("2", renamed=True)
    app = make_app()
    app.register(old, new)
    assert app.workflows["charge"] is new
    newest = app.start("charge", {"amount": 1})
    pinned = app.start("charge", {"amount": 2}, version="1")
    with pytest.raises(UnknownWorkflow, match=r"no version '3'.*known: 1, 2"):
        app.start("charge", {"amount": 3}, version="3")
    with running_worker(app):
        assert newest.result(timeout=10) == "1 charged by 2"
        assert pinned.result(timeout=10) == "2 charged by 1"
    assert [app.get_run(r.id).version for r in (newest, pinned)] == ["2", "1"]
    for status in (None, RunStatus.COMPLETED):  # every listing says it too
        for workflow in (None, "charge"):
            listed = app.list_runs(status=status, workflow=workflow)
            assert {r.id: r.version for r in listed} == {newest.id: "2", pinned.id: "1"}


def test_without_version_the_shape_is_the_version(make_app: Callable[..., App]) -> None:
    before, renamed, same_shape = charge(None), charge(None, renamed=True), charge(None)
    assert before.version != renamed.version
    assert before.version == same_shape.version
    app = make_app(before)
    run = app.start("charge", {"amount": 7})
    assert app.get_run(run.id).version == before.version


def test_a_process_without_the_code_starts_from_the_stored_blueprint(
    make_app: Callable[..., App], database_url: str
) -> None:
    worker_app = make_app(charge("1"))
    worker_app.migrate()  # stores the blueprint
    producer = App(database_url)  # imports no workflow
    try:
        run = producer.start("charge", {"amount": 9})
        with pytest.raises(UnknownWorkflow, match=r"'refund'.*stored: charge"):
            producer.start("refund", {})
        with pytest.raises(SerializationError, match="the input of workflow 'charge'"):
            producer.start("charge", {1, 2})
    finally:
        producer.close()
    with running_worker(worker_app):
        assert worker_app.run(run.id).result(timeout=10) == "9 charged by 1"
    assert worker_app.get_run(run.id).version == "1"


def test_the_same_version_with_another_definition_is_refused(
    make_app: Callable[..., App],
) -> None:
    app = make_app(charge("1"))
    with pytest.raises(
        InvalidArgument, match="another definition of workflow 'charge' version '1'"
    ):
        app.register(charge("1", renamed=True))


def test_register_after_connecting_stores_the_blueprint_at_once(
    make_app: Callable[..., App], database_url: str
) -> None:
    app = make_app()
    app.migrate()
    app.register(charge("5"))
    assert [(d["name"], d["version"]) for d in app.engine.stored_definitions("charge")] == [
        ("charge", "5")
    ]
    with App(database_url) as producer:
        assert producer.get_run(producer.start("charge", {"amount": 1}).id).version == "5"
