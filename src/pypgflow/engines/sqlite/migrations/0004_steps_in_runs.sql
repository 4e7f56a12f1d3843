-- 0004: a run's steps move into its own row (runs.steps, one JSON object), and a plain step's
-- output onto its task, like a map element's: a run is one row to lock, read and write instead
-- of one per step. Tasks lose their foreign key, as on PostgreSQL (retention deletes a run's
-- tasks with it). The step objects hold what the steps table held, without its null and false
-- values (see engines/sqlite/queries.sql and engines/sqlbase.py, "steps").
--
-- SQLite cannot add a column before a table's constraints, nor drop a foreign key: runs and
-- tasks are made again, as schema.sql makes them, and their rows copied. Their indexes go
-- first (their names are taken again) and come back in schema.sql's order. The old tasks go
-- before the steps they reference, and the steps before the old runs they reference.
DROP INDEX runs_idempotency_key;
DROP INDEX runs_status_created;
DROP INDEX runs_workflow_created;
DROP INDEX runs_finished;
DROP INDEX runs_created;
DROP INDEX runs_workflow_status_created;
DROP INDEX tasks_run_step_index;
DROP INDEX tasks_claim;
DROP INDEX tasks_running_instance;
ALTER TABLE runs RENAME TO runs_0003;
ALTER TABLE tasks RENAME TO tasks_0003;

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
    CONSTRAINT runs_status_is_known
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT runs_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9),
    CONSTRAINT runs_remaining_steps_not_negative CHECK (remaining_steps >= 0)
) STRICT;

INSERT INTO runs
    (id, workflow, status, queue, priority, idempotency_key, input, output, error,
     remaining_steps, created_at, scheduled_at, started_at, finished_at, steps)
SELECT r.id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key, r.input, r.output,
       r.error, r.remaining_steps, r.created_at, r.scheduled_at, r.started_at, r.finished_at,
       coalesce(
           (SELECT json_group_object(s.name, json_patch('{}', json_object(
                       'position', s.position,
                       'status', s.status,
                       'depends_on', json(s.depends_on),
                       'remaining_deps', s.remaining_deps,
                       'max_attempts', s.max_attempts,
                       'is_map', CASE WHEN s.is_map THEN json('true') END,
                       'map_over', s.map_over,
                       'remaining_tasks', s.remaining_tasks,
                       'task_count', s.task_count)))
            FROM steps s WHERE s.run_id = r.id),
           '{}')
FROM runs_0003 r;

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
    CONSTRAINT tasks_status_is_known
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT tasks_max_attempts_positive CHECK (max_attempts >= 1)
) STRICT;

INSERT INTO tasks
    (id, run_id, step, task_index, workflow, queue, priority, status, run_at, attempt,
     max_attempts, input, output, errors, instance_id, rescues, created_at, started_at,
     finished_at)
SELECT t.id, t.run_id, t.step, t.task_index, t.workflow, t.queue, t.priority, t.status,
       t.run_at, t.attempt, t.max_attempts, t.input,
       CASE WHEN t.task_index IS NULL AND t.output IS NULL
            THEN (SELECT s.output FROM steps s WHERE s.run_id = t.run_id AND s.name = t.step)
            ELSE t.output END,
       t.errors, t.instance_id, t.rescues, t.created_at, t.started_at, t.finished_at
FROM tasks_0003 t;
-- task ids are never reused: the new table counts on from the old one's last id
UPDATE sqlite_sequence
SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tasks_0003'), 0))
WHERE name = 'tasks';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'tasks', seq FROM sqlite_sequence
WHERE name = 'tasks_0003' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'tasks');

DROP TABLE tasks_0003;
DROP TABLE steps;
DROP TABLE runs_0003;

CREATE UNIQUE INDEX runs_idempotency_key ON runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_workflow_created ON runs (workflow, created_at);
CREATE UNIQUE INDEX tasks_run_step_index ON tasks (run_id, step, coalesce(task_index, -1));
CREATE INDEX tasks_claim ON tasks (queue, priority, run_at, id) WHERE status = 'queued';
CREATE INDEX tasks_running_instance ON tasks (instance_id) WHERE status = 'running';
CREATE INDEX runs_finished ON runs (status, finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_workflow_status_created ON runs (workflow, status, created_at);
