-- Every statement the PostgreSQL engine runs, by name. {schema} is the quoted schema name;
-- values are always bound parameters (%(name)s), never formatted into the text.

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM {schema}.migrations;

-- name: insert_runs
-- Inserts a batch of runs with their steps and root tasks. Runs whose idempotency key is taken
-- are skipped, and so are their steps and tasks; the ids actually inserted are returned.
WITH new_runs AS (
    INSERT INTO {schema}.runs
        (id, workflow, status, queue, priority, idempotency_key, input, remaining_steps,
         scheduled_at, output)
    SELECT r.id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key, r.input::jsonb,
           r.remaining_steps, coalesce(r.run_at, now() + r.delay * interval '1 second'),
           r.output::jsonb
    FROM unnest(%(ids)s::uuid[], %(workflows)s::text[], %(statuses)s::text[], %(queues)s::text[],
                %(priorities)s::smallint[], %(keys)s::text[], %(inputs)s::text[],
                %(remaining)s::int[], %(run_ats)s::timestamptz[], %(delays)s::float8[],
                %(outputs)s::text[])
        AS r(id, workflow, status, queue, priority, idempotency_key, input, remaining_steps,
             run_at, delay, output)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, scheduled_at
), new_steps AS (
    INSERT INTO {schema}.steps
        (run_id, name, position, status, depends_on, remaining_deps, max_attempts, is_map,
         map_over, remaining_tasks, task_count, output, started_at, finished_at)
    SELECT s.run_id, s.name, s.position, s.status, s.depends_on::jsonb, s.remaining_deps,
           s.max_attempts, s.is_map, s.map_over, s.remaining_tasks, s.task_count, s.output::jsonb,
           CASE WHEN s.status <> 'waiting' THEN now() END,
           CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN now() END
    FROM unnest(%(s_run_ids)s::uuid[], %(s_names)s::text[], %(s_positions)s::smallint[],
                %(s_statuses)s::text[], %(s_depends_on)s::text[], %(s_remaining_deps)s::int[],
                %(s_max_attempts)s::int[], %(s_is_map)s::bool[], %(s_map_over)s::text[],
                %(s_remaining_tasks)s::int[], %(s_task_counts)s::int[], %(s_outputs)s::text[])
        AS s(run_id, name, position, status, depends_on, remaining_deps, max_attempts, is_map,
             map_over, remaining_tasks, task_count, output)
    WHERE s.run_id IN (SELECT id FROM new_runs)
), new_tasks AS (
    INSERT INTO {schema}.tasks
        (run_id, step, task_index, workflow, queue, priority, max_attempts, input, run_at)
    SELECT t.run_id, t.step, t.task_index, t.workflow, t.queue, t.priority, t.max_attempts,
           t.input::jsonb, n.scheduled_at
    FROM unnest(%(t_run_ids)s::uuid[], %(t_steps)s::text[], %(t_indexes)s::int[],
                %(t_workflows)s::text[], %(t_queues)s::text[], %(t_priorities)s::smallint[],
                %(t_max_attempts)s::int[], %(t_inputs)s::text[])
        AS t(run_id, step, task_index, workflow, queue, priority, max_attempts, input)
    JOIN new_runs n ON n.id = t.run_id
)
SELECT id::text FROM new_runs;

-- name: runs_by_idempotency_key
SELECT id::text, idempotency_key FROM {schema}.runs WHERE idempotency_key = ANY(%(keys)s::text[]);

-- name: claim_tasks
-- Claims up to %(limit)s due tasks of one queue, best first: priority, then due time, then age.
-- Tasks locked by another transaction are skipped, never waited for. started_at keeps the
-- first claim's time.
WITH picked AS (
    SELECT id FROM {schema}.tasks
    WHERE status = 'queued' AND queue = %(queue)s AND run_at <= now()
      AND workflow = ANY(%(workflows)s::text[])
    ORDER BY priority, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {schema}.tasks t
    SET status = 'running', attempt = t.attempt + 1, instance_id = %(instance_id)s,
        started_at = coalesce(t.started_at, now())
    FROM picked
    WHERE t.id = picked.id
    RETURNING t.id, t.run_id, t.step, t.task_index, t.workflow, t.attempt, t.max_attempts, t.input
), started AS (
    -- Runs whose first task this is are running. A run locked by another transaction is
    -- skipped rather than waited for (a claim must never wait): recording this task's outcome
    -- marks it running then.
    UPDATE {schema}.runs SET status = 'running', started_at = coalesce(started_at, now())
    WHERE id IN (
        SELECT id FROM {schema}.runs
        WHERE id IN (SELECT run_id FROM claimed) AND status = 'pending'
        ORDER BY id
        FOR UPDATE SKIP LOCKED
    )
)
SELECT c.id, c.run_id::text AS run_id, c.step, c.task_index, c.workflow, c.attempt,
       c.max_attempts, c.input, r.input AS run_input,
       (SELECT jsonb_object_agg(d.name, d.output) FROM {schema}.steps d
        WHERE d.run_id = c.run_id
          AND d.name IN (SELECT jsonb_array_elements_text(s.depends_on))) AS dependency_outputs
FROM claimed c
JOIN {schema}.runs r ON r.id = c.run_id
JOIN {schema}.steps s ON s.run_id = c.run_id AND s.name = c.step
ORDER BY c.id;



-- name: next_due
SELECT extract(epoch FROM min(run_at) - now()) AS seconds FROM {schema}.tasks
WHERE status = 'queued' AND queue = ANY(%(queues)s::text[]) AND workflow = ANY(%(workflows)s::text[]);

-- name: lock_runs
-- Every change to a run's steps and tasks (but claims) happens under its row lock, taken in id
-- order so that transactions touching the same runs never deadlock.
SELECT id::text, workflow, status, queue, priority, remaining_steps
FROM {schema}.runs WHERE id = ANY(%(ids)s::uuid[])
ORDER BY id
FOR UPDATE;

-- name: run_steps
SELECT run_id::text, name, position, status, depends_on, remaining_deps, max_attempts, is_map,
       map_over, remaining_tasks, task_count
FROM {schema}.steps WHERE run_id = ANY(%(ids)s::uuid[]);

-- name: complete_tasks
-- Guarded: only the attempt that is still running may complete; late or duplicate completions
-- change nothing.
UPDATE {schema}.tasks t
SET status = 'completed', finished_at = now(), output = d.output::jsonb
FROM unnest(%(id)s::bigint[], %(attempt)s::int[], %(output)s::text[]) AS d(id, attempt, output)
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING t.id, t.run_id::text AS run_id, t.step, t.task_index;

-- name: retry_tasks
UPDATE {schema}.tasks t
SET status = 'queued', run_at = now() + d.delay * interval '1 second',
    errors = t.errors || jsonb_build_array(d.error::jsonb)
FROM unnest(%(id)s::bigint[], %(attempt)s::int[], %(delay)s::float8[], %(error)s::text[])
    AS d(id, attempt, delay, error)
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING t.run_id::text;

-- name: fail_tasks
UPDATE {schema}.tasks t
SET status = 'failed', finished_at = now(),
    errors = t.errors || jsonb_build_array(d.error::jsonb)
FROM unnest(%(id)s::bigint[], %(attempt)s::int[], %(error)s::text[]) AS d(id, attempt, error)
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING t.id, t.run_id::text AS run_id, t.step, t.task_index, t.attempt;

-- name: step_outputs
SELECT name, output::text FROM {schema}.steps
WHERE run_id = %(run_id)s::uuid AND name = ANY(%(names)s::text[]);

-- name: map_outputs
SELECT output::text FROM {schema}.tasks
WHERE run_id = %(run_id)s::uuid AND step = %(step)s
ORDER BY task_index;

-- name: run_input
SELECT input::text FROM {schema}.runs WHERE id = %(run_id)s::uuid;

-- name: update_steps
UPDATE {schema}.steps s
SET status = d.status, remaining_deps = d.remaining_deps, remaining_tasks = d.remaining_tasks,
    task_count = d.task_count, output = coalesce(d.output::jsonb, s.output),
    started_at = CASE WHEN d.started THEN coalesce(s.started_at, now()) ELSE s.started_at END,
    finished_at = CASE WHEN d.finished THEN coalesce(s.finished_at, now()) END
FROM unnest(%(run_id)s::uuid[], %(name)s::text[], %(status)s::text[],
            %(remaining_deps)s::int[], %(remaining_tasks)s::int[], %(task_count)s::int[],
            %(output)s::text[], %(started)s::bool[], %(finished)s::bool[])
    AS d(run_id, name, status, remaining_deps, remaining_tasks, task_count, output, started,
         finished)
WHERE s.run_id = d.run_id AND s.name = d.name;

-- name: update_runs
UPDATE {schema}.runs r
SET status = d.status, remaining_steps = d.remaining_steps,
    output = d.output::jsonb, error = d.error::jsonb,
    started_at = CASE WHEN d.status <> 'pending' THEN coalesce(r.started_at, now())
                      ELSE r.started_at END,
    finished_at = CASE WHEN d.status IN ('completed', 'failed', 'cancelled') THEN now() END
FROM unnest(%(id)s::uuid[], %(status)s::text[], %(remaining_steps)s::int[], %(output)s::text[],
            %(error)s::text[])
    AS d(id, status, remaining_steps, output, error)
WHERE r.id = d.id;

-- name: insert_tasks
INSERT INTO {schema}.tasks (run_id, step, task_index, workflow, queue, priority, max_attempts, input)
SELECT * FROM unnest(%(run_id)s::uuid[], %(step)s::text[], %(task_index)s::int[],
                     %(workflow)s::text[], %(queue)s::text[], %(priority)s::smallint[],
                     %(max_attempts)s::int[], %(input)s::text[]::jsonb[]);

-- name: cancel_tasks_of_runs
UPDATE {schema}.tasks SET status = 'cancelled', finished_at = now()
WHERE run_id = ANY(%(ids)s::uuid[]) AND status IN ('queued', 'running');

-- name: requeue_tasks
-- A resumed step's unfinished tasks go back to the queue with a fresh attempt budget.
UPDATE {schema}.tasks t
SET status = 'queued', run_at = now(), finished_at = NULL, max_attempts = t.attempt + d.budget
FROM unnest(%(run_id)s::uuid[], %(step)s::text[], %(budget)s::int[]) AS d(run_id, step, budget)
WHERE t.run_id = d.run_id AND t.step = d.step AND t.status <> 'completed';

-- name: notify
SELECT pg_notify(%(channel)s, queue) FROM unnest(%(queues)s::text[]) AS queue;

-- name: get_run
SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at
FROM {schema}.runs WHERE id = %(id)s::uuid;

-- name: list_runs
SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at
FROM {schema}.runs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: run_result
SELECT status, output, error FROM {schema}.runs WHERE id = %(id)s::uuid;

-- name: step_infos
SELECT s.name, s.position, s.status, s.depends_on, s.is_map, s.task_count, s.output,
       min(t.started_at) AS started_at, s.finished_at,
       coalesce(max(t.attempt), 0) AS attempts,
       coalesce(jsonb_agg(e.error ORDER BY (e.error ->> 'attempt')::int, t.task_index)
                FILTER (WHERE e.error IS NOT NULL), '[]'::jsonb) AS errors,
       (array_agg(t.instance_id ORDER BY t.started_at DESC NULLS LAST))[1] AS instance_id
FROM {schema}.steps s
LEFT JOIN {schema}.tasks t ON t.run_id = s.run_id AND t.step = s.name
LEFT JOIN LATERAL jsonb_array_elements(t.errors) AS e(error) ON true
WHERE s.run_id = %(id)s::uuid
GROUP BY s.run_id, s.name
ORDER BY s.position;

-- name: running_tasks_still_running
-- Of the tasks a worker is executing, those still running (the others were cancelled or rescued).
SELECT id FROM {schema}.tasks WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running';

-- name: upsert_instance
INSERT INTO {schema}.instances (id, hostname, pid, queues, load)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s::jsonb, 0)
ON CONFLICT (id) DO UPDATE
SET hostname = excluded.hostname, pid = excluded.pid, queues = excluded.queues, load = 0,
    started_at = now(), heartbeat_at = now();

-- name: heartbeat_instance
UPDATE {schema}.instances SET heartbeat_at = now(), load = %(load)s WHERE id = %(id)s;

-- name: delete_instance
DELETE FROM {schema}.instances WHERE id = %(id)s;

-- name: list_instances
SELECT id, hostname, pid, queues, load, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at) AS heartbeat_age
FROM {schema}.instances ORDER BY started_at, id;

-- name: unknown_workflows_waiting
SELECT DISTINCT workflow FROM {schema}.tasks
WHERE status = 'queued' AND queue = ANY(%(queues)s::text[]) AND run_at <= now()
  AND workflow <> ALL(%(workflows)s::text[])
LIMIT 20;

-- name: release_tasks
-- Hands tasks back on graceful shutdown: queued again, the interrupted attempt not counted.
UPDATE {schema}.tasks SET status = 'queued', attempt = attempt - 1, run_at = now()
WHERE id = ANY(%(ids)s::bigint[]) AND instance_id = %(instance_id)s AND status = 'running'
RETURNING queue;
