-- The current pypgflow schema, in full: what a fresh install creates.
-- Upgrades of existing installs go through migrations/NNNN_*.sql instead; a test proves that
-- applying every migration in order gives exactly this schema.
-- {schema} is replaced by the quoted schema name (pypgflow by default).

CREATE SCHEMA IF NOT EXISTS {schema};

CREATE TABLE {schema}.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per started workflow run.
CREATE TABLE {schema}.runs (
    id uuid PRIMARY KEY,
    workflow text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    queue text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    idempotency_key text,
    input jsonb,
    output jsonb,
    error jsonb,
    -- steps not yet completed: the run completes when this reaches zero
    remaining_steps integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    -- the run's steps, by name: the graph, copied at start so that a run never depends on how
    -- its workflow is defined later, and each step's state (see engines/sqlbase.py)
    steps jsonb NOT NULL,
    -- the trace context the run was started in (a W3C trace context carrier as JSON text, set
    -- when the starting process traces: see pypgflow/telemetry/otel.py); untrusted when read
    trace_context text,
    -- the version of its workflow the run started on (NULL for runs stored before 0007)
    version text,
    -- the run this one was forked from (App.fork), if it was
    forked_from uuid,
    -- a child run's parent run (Workflow.subflow), and the parent's task that waits for it
    parent_run_id uuid,
    parent_task_id bigint,
    CONSTRAINT runs_status_is_known
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT runs_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9),
    CONSTRAINT runs_remaining_steps_not_negative CHECK (remaining_steps >= 0)
);
CREATE UNIQUE INDEX runs_idempotency_key ON {schema}.runs (workflow, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- list_runs, newest first, by status and by workflow and status (the pair as one key), each
-- listing stopping after its limit; id breaks the ties of runs started together. A listing of
-- every status (all runs, or a workflow's) merges one range per status. Every change of a
-- run's status writes an entry in each index of runs: they are kept few.
CREATE INDEX runs_status_created ON {schema}.runs (status, created_at, id);
CREATE INDEX runs_workflow_status_created
    ON {schema}.runs ((ARRAY[workflow, status]), created_at, id);
-- The children of a run, to cancel them with it.
CREATE INDEX runs_parent ON {schema}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- One row per unit of work a worker claims: one per step whose dependencies completed, or one
-- per element of a map step. No foreign key to runs: checking one costs every insert a lookup
-- and a row lock, and only pypgflow writes these rows (retention deletes a run's tasks with it).
CREATE TABLE {schema}.tasks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    step text NOT NULL,
    task_index integer,
    workflow text NOT NULL,
    queue text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'queued',
    run_at timestamptz NOT NULL DEFAULT now(),
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    -- the element of a map step
    input jsonb,
    -- the step's output, or a map element's result
    output jsonb,
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    instance_id text,
    rescues integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    -- its run's version: a claim takes the versions its worker has (NULL: any)
    version text,
    -- a subflow task's child run, which it waits for (queued, due when the child finishes)
    child_run_id uuid,
    -- of its lost workers, those running it alone (see orchestration.task_lost)
    lone_losses integer NOT NULL DEFAULT 0,
    -- the gate a task sent back by a full limit waits for (pypgflow/limits.py)
    gate_wait text,
    CONSTRAINT tasks_status_is_known
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT tasks_max_attempts_positive CHECK (max_attempts >= 1)
);
-- A run's tasks, by step and element.
CREATE UNIQUE INDEX tasks_run_step_index ON {schema}.tasks (run_id, step, coalesce(task_index, -1));
-- The claim index: only queued tasks, in claim order.
CREATE INDEX tasks_claim ON {schema}.tasks (queue, priority, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_running_instance ON {schema}.tasks (instance_id) WHERE status = 'running';

-- Worker processes: registered on start, heartbeating, removed on graceful stop.
CREATE TABLE {schema}.instances (
    id text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    queues jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    load integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- the workflow versions it runs ("name@version")
    versions jsonb NOT NULL DEFAULT '[]'::jsonb
);

-- One row per lease (today only "leader"): held by one instance until it expires.
CREATE TABLE {schema}.leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Cron schedules, as the workers' code defines them; the leader turns their ticks into runs.
CREATE TABLE {schema}.schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    workflow text NOT NULL,
    input jsonb,
    queue text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    timezone text NOT NULL DEFAULT 'UTC',
    last_tick_at timestamptz,
    next_tick_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9)
);

-- Each workflow version's blueprint (graph and options, no code: pypgflow/blueprints.py),
-- stored by workers and apps, so that a process without the code can start the workflow.
CREATE TABLE {schema}.workflow_definitions (
    workflow text NOT NULL,
    version text NOT NULL,
    definition jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, version)
);

-- Signals sent to runs (App.signal): each taken by the wait step it completed (step), or kept
-- for the wait step of that name that reaches it (step NULL). Deleted with their run.
CREATE TABLE {schema}.signals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    name text NOT NULL,
    data jsonb,
    sent_at timestamptz NOT NULL DEFAULT now(),
    step text,
    consumed_at timestamptz
);
CREATE INDEX signals_run_name ON {schema}.signals (run_id, name, id);

-- Fleet-wide limits (pypgflow/limits.py): the tasks waiting for a gate, the holders of
-- concurrency gates (a task, or a run for a workflow's limit), the tokens of rate gates.
CREATE INDEX tasks_gate_waiters ON {schema}.tasks (gate_wait, priority, id)
    WHERE status = 'queued' AND gate_wait IS NOT NULL;
CREATE TABLE {schema}.gate_holders (
    key text NOT NULL,
    task_id bigint,
    attempt integer,
    run_id uuid NOT NULL,
    held_since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gate_holders_key ON {schema}.gate_holders (key);
CREATE INDEX gate_holders_run ON {schema}.gate_holders (run_id);
CREATE TABLE {schema}.rate_tokens (
    key text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rate_tokens_key ON {schema}.rate_tokens (key, taken_at);
