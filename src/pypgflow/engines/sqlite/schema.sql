-- The current pypgflow schema for SQLite, in full: what a fresh install creates.
-- Upgrades of existing databases go through migrations/NNNN_*.sql instead; a test proves that
-- applying every migration in order gives exactly this schema.
--
-- The same tables, columns and constraints as the PostgreSQL schema, in SQLite's types (STRICT
-- tables, so a value of the wrong type is an error as it is in PostgreSQL):
--   uuid -> TEXT, jsonb -> TEXT (JSON text), boolean -> INTEGER 0/1,
--   timestamptz -> REAL (unix epoch seconds, UTC), computed as
--   (julianday('now') - 2440587.5) * 86400.0 (millisecond resolution).

CREATE TABLE migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;

-- One row per started workflow run.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    input TEXT,
    output TEXT,
    error TEXT,
    -- steps not yet completed: the run completes when this reaches zero
    remaining_steps INTEGER NOT NULL,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    scheduled_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at REAL,
    finished_at REAL,
    -- the run's steps, by name: the graph, copied at start so that a run never depends on how
    -- its workflow is defined later, and each step's state (see engines/sqlbase.py), as JSON
    steps TEXT NOT NULL,
    -- the trace context the run was started in (a W3C trace context carrier as JSON text, set
    -- when the starting process traces: see pypgflow/telemetry/otel.py); untrusted when read
    trace_context TEXT,
    -- the version of its workflow the run started on (NULL for runs stored before 0007)
    version TEXT,
    -- the run this one was forked from (App.fork), if it was
    forked_from TEXT,
    -- a child run's parent run (Workflow.subflow), and the parent's task that waits for it
    parent_run_id TEXT,
    parent_task_id INTEGER,
    CONSTRAINT runs_status_is_known
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT runs_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9),
    CONSTRAINT runs_remaining_steps_not_negative CHECK (remaining_steps >= 0)
) STRICT;
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_workflow_created ON runs (workflow, created_at);

-- One row per unit of work a worker claims: one per step whose dependencies completed, or one
-- per element of a map step. No foreign key to runs, as on PostgreSQL (retention deletes a
-- run's tasks with it).
CREATE TABLE tasks (
    -- AUTOINCREMENT: an id is never reused, like PostgreSQL's identity
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    task_index INTEGER,
    workflow TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'queued',
    run_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    -- the element of a map step
    input TEXT,
    -- the step's output, or a map element's result
    output TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    instance_id TEXT,
    rescues INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at REAL,
    finished_at REAL,
    -- its run's version: a claim takes the versions its worker has (NULL: any)
    version TEXT,
    -- a subflow task's child run, which it waits for (queued, due when the child finishes)
    child_run_id TEXT,
    -- of its lost workers, those running it alone (see orchestration.task_lost)
    lone_losses INTEGER NOT NULL DEFAULT 0,
    -- the gate a task sent back by a full limit waits for (pypgflow/limits.py)
    gate_wait TEXT,
    CONSTRAINT tasks_status_is_known
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT tasks_max_attempts_positive CHECK (max_attempts >= 1)
) STRICT;
CREATE UNIQUE INDEX tasks_run_step_index ON tasks (run_id, step, coalesce(task_index, -1));
-- The claim index: only queued tasks, in claim order.
CREATE INDEX tasks_claim ON tasks (queue, priority, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_running_instance ON tasks (instance_id) WHERE status = 'running';

-- Worker processes: registered on start, heartbeating, removed on graceful stop.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    queues TEXT NOT NULL DEFAULT '{}',
    load INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    heartbeat_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    -- the workflow versions it runs ("name@version")
    versions TEXT NOT NULL DEFAULT '[]'
) STRICT;

-- One row per lease (today only "leader"): held by one instance until it expires.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
) STRICT;

-- Cron schedules, as the workers' code defines them; the leader turns their ticks into runs.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    workflow TEXT NOT NULL,
    input TEXT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    last_tick_at REAL,
    next_tick_at REAL,
    updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    CONSTRAINT schedules_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9)
) STRICT;

CREATE INDEX runs_finished ON runs (status, finished_at) WHERE finished_at IS NOT NULL;
-- list_runs, newest first, by filter (none: runs_created; status: runs_status_created;
-- workflow: runs_workflow_created; both: runs_workflow_status_created): each listing stops after
-- its limit; the rowid, which ends every index, breaks ties. (Created here, after the rest, as
-- the migrations create them: SQLite lists a table's indexes in the order they were made.)
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_workflow_status_created ON runs (workflow, status, created_at);
-- Idempotency keys, scoped to their workflow (last, as migration 0005 makes it).
CREATE UNIQUE INDEX runs_idempotency_key ON runs (workflow, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Each workflow version's blueprint (graph and options, no code: pypgflow/blueprints.py),
-- stored by workers and apps, so that a process without the code can start the workflow.
CREATE TABLE workflow_definitions (
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    definition TEXT NOT NULL,
    stored_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (workflow, version)
) STRICT;

-- Signals sent to runs (App.signal): each taken by the wait step it completed (step), or kept
-- for the wait step of that name that reaches it (step NULL). Deleted with their run.
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT,
    sent_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    step TEXT,
    consumed_at REAL
) STRICT;
CREATE INDEX signals_run_name ON signals (run_id, name, id);

-- The children of a run, to cancel them with it (created after the tables above: SQLite lists
-- a table's indexes in the order they were made, as migration 0009 made this one).
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- Fleet-wide limits (pypgflow/limits.py): the tasks waiting for a gate, the holders of
-- concurrency gates (a task, or a run for a workflow's limit), the tokens of rate gates.
CREATE INDEX tasks_gate_waiters ON tasks (gate_wait, priority, id)
    WHERE status = 'queued' AND gate_wait IS NOT NULL;
CREATE TABLE gate_holders (
    key TEXT NOT NULL,
    task_id INTEGER,
    attempt INTEGER,
    run_id TEXT NOT NULL,
    held_since REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;
CREATE INDEX gate_holders_key ON gate_holders (key);
CREATE INDEX gate_holders_run ON gate_holders (run_id);
CREATE TABLE rate_tokens (
    key TEXT NOT NULL,
    taken_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;
CREATE INDEX rate_tokens_key ON rate_tokens (key, taken_at);
