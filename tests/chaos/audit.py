"""Every state change of tasks and runs, recorded by the database itself: triggers that a fault
scenario installs on its fresh database, writing one ``chaos_audit`` row per change in the same
transaction as the change. What committed is then read back, whatever the workers believed:
each (run, step, element) completed exactly once, and nothing changed a task after it finished
(a late overwrite, by a worker that lost its step and came back)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from tests.integration.helpers import is_sqlite, query

_POSTGRES = [
    """
    CREATE TABLE public.chaos_audit (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        row_id text NOT NULL,
        step text,
        task_index integer,
        old_status text,
        new_status text NOT NULL,
        old_attempt integer,
        new_attempt integer,
        old_instance text,
        output_changed boolean NOT NULL,
        at timestamptz NOT NULL DEFAULT clock_timestamp()
    )
    """,
    """
    CREATE FUNCTION public.chaos_audit_task() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO public.chaos_audit (kind, row_id, step, task_index, new_status,
                                            new_attempt, output_changed)
            VALUES ('task', NEW.id::text, NEW.step, NEW.task_index, NEW.status, NEW.attempt,
                    false);
        ELSIF NEW.status IS DISTINCT FROM OLD.status OR NEW.output IS DISTINCT FROM OLD.output
        THEN
            INSERT INTO public.chaos_audit (kind, row_id, step, task_index, old_status,
                                            new_status, old_attempt, new_attempt, old_instance,
                                            output_changed)
            VALUES ('task', NEW.id::text, NEW.step, NEW.task_index, OLD.status, NEW.status,
                    OLD.attempt, NEW.attempt, OLD.instance_id,
                    NEW.output IS DISTINCT FROM OLD.output);
        END IF;
        RETURN NEW;
    END $$
    """,
    """
    CREATE FUNCTION public.chaos_audit_run() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status
           OR NEW.output IS DISTINCT FROM OLD.output THEN
            INSERT INTO public.chaos_audit (kind, row_id, old_status, new_status, output_changed)
            VALUES ('run', NEW.id::text, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
                    NEW.status, TG_OP = 'UPDATE' AND NEW.output IS DISTINCT FROM OLD.output);
        END IF;
        RETURN NEW;
    END $$
    """,
    """CREATE TRIGGER chaos_audit AFTER INSERT OR UPDATE ON pypgflow.tasks
       FOR EACH ROW EXECUTE FUNCTION public.chaos_audit_task()""",
    """CREATE TRIGGER chaos_audit AFTER INSERT OR UPDATE ON pypgflow.runs
       FOR EACH ROW EXECUTE FUNCTION public.chaos_audit_run()""",
]

_SQLITE = [
    """
    CREATE TABLE chaos_audit (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        row_id TEXT NOT NULL,
        step TEXT,
        task_index INTEGER,
        old_status TEXT,
        new_status TEXT NOT NULL,
        old_attempt INTEGER,
        new_attempt INTEGER,
        old_instance TEXT,
        output_changed INTEGER NOT NULL,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
    )
    """,
    """
    CREATE TRIGGER chaos_audit_task_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO chaos_audit (kind, row_id, step, task_index, new_status, new_attempt,
                                 output_changed)
        VALUES ('task', NEW.id, NEW.step, NEW.task_index, NEW.status, NEW.attempt, 0);
    END
    """,
    """
    CREATE TRIGGER chaos_audit_task_update AFTER UPDATE ON tasks
    WHEN NEW.status IS NOT OLD.status OR NEW.output IS NOT OLD.output BEGIN
        INSERT INTO chaos_audit (kind, row_id, step, task_index, old_status, new_status,
                                 old_attempt, new_attempt, old_instance, output_changed)
        VALUES ('task', NEW.id, NEW.step, NEW.task_index, OLD.status, NEW.status, OLD.attempt,
                NEW.attempt, OLD.instance_id, NEW.output IS NOT OLD.output);
    END
    """,
    """
    CREATE TRIGGER chaos_audit_run_insert AFTER INSERT ON runs BEGIN
        INSERT INTO chaos_audit (kind, row_id, new_status, output_changed)
        VALUES ('run', NEW.id, NEW.status, 0);
    END
    """,
    """
    CREATE TRIGGER chaos_audit_run_update AFTER UPDATE ON runs
    WHEN NEW.status IS NOT OLD.status OR NEW.output IS NOT OLD.output BEGIN
        INSERT INTO chaos_audit (kind, row_id, old_status, new_status, output_changed)
        VALUES ('run', NEW.id, OLD.status, NEW.status, NEW.output IS NOT OLD.output);
    END
    """,
]

FINISHED = ("completed", "failed", "cancelled")


def install(url: str) -> None:
    """Add the audit table and its triggers to a fresh, migrated database."""
    for statement in _SQLITE if is_sqlite(url) else _POSTGRES:
        query_script(url, statement)


def query_script(url: str, statement: str) -> None:
    if is_sqlite(url):
        import contextlib
        import sqlite3

        from pypgflow.engines.sqlite import sqlite_path_from_url

        with contextlib.closing(sqlite3.connect(sqlite_path_from_url(url), timeout=30)) as db:
            db.executescript(statement + ";")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)  # type: ignore[arg-type]  # literal DDL of this module


@dataclass(frozen=True)
class Change:
    kind: str
    row_id: str
    step: str | None
    task_index: int | None
    old_status: str | None
    new_status: str
    old_attempt: int | None
    new_attempt: int | None
    old_instance: str | None
    output_changed: bool


def changes(url: str) -> list[Change]:
    table = "chaos_audit" if is_sqlite(url) else "public.chaos_audit"
    rows = query(
        url,
        "SELECT kind, row_id, step, task_index, old_status, new_status, old_attempt, "
        f"new_attempt, old_instance, output_changed FROM {table} ORDER BY id",
    )
    return [
        Change(str(r[0]), str(r[1]), r[2], r[3], r[4], str(r[5]), r[6], r[7], r[8], bool(r[9]))
        for r in rows
    ]


@dataclass(frozen=True)
class Verdict:
    """What the audit says about one scenario's database."""

    tasks: int
    runs: int
    #: tasks completed other than exactly once (task id → times), and runs likewise
    tasks_not_completed_once: dict[str, int]
    runs_not_completed_once: dict[str, int]
    #: changes to a task or run after it had finished: late overwrites
    late_overwrites: list[Change]
    #: tasks handed from running back to queued (rescued, handed back, retried)
    requeued: int

    def violations(self) -> list[str]:
        found = []
        if self.tasks_not_completed_once:
            sample = dict(list(self.tasks_not_completed_once.items())[:5])
            found.append(
                f"{len(self.tasks_not_completed_once)} tasks not completed exactly once "
                f"(task id: completions): {sample}"
            )
        if self.runs_not_completed_once:
            sample = dict(list(self.runs_not_completed_once.items())[:5])
            found.append(f"{len(self.runs_not_completed_once)} runs not completed once: {sample}")
        if self.late_overwrites:
            found.append(f"{len(self.late_overwrites)} late overwrites: {self.late_overwrites[:3]}")
        return found


def verdict(url: str, *, every_run_completes: bool = True) -> Verdict:
    """Read the audit. ``every_run_completes``: runs (and their tasks) are all expected to
    end completed; otherwise only finished-once and no-overwrite are checked."""
    seen = changes(url)
    task_completions: collections.Counter[str] = collections.Counter()
    run_completions: collections.Counter[str] = collections.Counter()
    tasks: set[str] = set()
    runs: set[str] = set()
    late: list[Change] = []
    requeued = 0
    for change in seen:
        (tasks if change.kind == "task" else runs).add(change.row_id)
        if change.old_status in FINISHED:
            late.append(change)
        if change.new_status == "completed":
            counter = task_completions if change.kind == "task" else run_completions
            counter[change.row_id] += 1
        if change.kind == "task" and (change.old_status, change.new_status) == (
            "running",
            "queued",
        ):
            requeued += 1
    wanted = 1 if every_run_completes else None
    return Verdict(
        tasks=len(tasks),
        runs=len(runs),
        tasks_not_completed_once={
            t: task_completions[t]
            for t in sorted(tasks)
            if (wanted is not None and task_completions[t] != wanted) or task_completions[t] > 1
        },
        runs_not_completed_once={
            r: run_completions[r]
            for r in sorted(runs)
            if (wanted is not None and run_completions[r] != wanted) or run_completions[r] > 1
        },
        late_overwrites=late,
        requeued=requeued,
    )
