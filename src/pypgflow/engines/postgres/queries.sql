-- Every statement the PostgreSQL engine runs, by name. {schema} is the quoted schema name,
-- {channel} the quoted channel that announces new work (workers listen on it), {done_channel}
-- the quoted channel that announces finished runs (result() waiters listen on it) and
-- {done_channel_name} the same name as a string literal (pg_notify takes text), filled in when
-- the engine loads this file; values are always bound parameters (%(name)s), never formatted
-- into the text. A list (ids, names) is one array parameter, written as an array literal and
-- cast (%(ids)s::uuid[]); a batch of rows is one JSON document, read with json_to_recordset
-- (%(rows)s::json): one text parameter each, whatever the batch size, and much cheaper for the
-- worker to make than binary arrays (psycopg dumps those element by element, in Python). A
-- statement that updates the rows of a batch finds them through their key
-- (id = ANY(ARRAY(SELECT id FROM d))): the planner guesses a function's rows at 100, and a
-- join with 100 guessed rows may read a whole table.
--
-- Finished runs are announced on {done_channel} by their ids, comma-separated, at most 200 ids
-- per notification: a payload must stay under 8000 bytes, and 200 UUIDs with their commas take
-- 7399. A transaction that finishes more sends several; one that finishes none sends none.

-- name: migrate_lock
-- Held until the migrating transaction ends: a second process migrating at the same time waits,
-- then finds the schema current. %(key)s is the engine's lock key.
SELECT pg_advisory_xact_lock(%(key)s);

-- name: migrations_table_exists
-- Whether there is a schema at all. %(table)s is the table's qualified name as text (a value,
-- not an identifier: to_regclass parses it, and says NULL where a plain query would fail).
SELECT to_regclass(%(table)s) IS NOT NULL;

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM {schema}.migrations;

-- name: record_migration
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: insert_runs
-- Inserts a batch of runs (each with its steps: the steps column) and their first tasks (due
-- when their run is scheduled, or their delay after: a start delay, a wait step's timeout; or
-- done already: the steps a fork keeps, with their outputs). Runs
-- whose idempotency key is taken are skipped, and so are their tasks; the ids actually inserted
-- are returned. The workers of the queues that got tasks are notified in the same statement
-- (delivered when its transaction commits), so that a start is one statement: one round trip
-- in autocommit mode. The batch travels as two JSON documents (runs, tasks), read with
-- json_to_recordset: one text parameter each, whatever the batch size, and cheaper to make than
-- a binary array per column. Inputs, outputs and steps (JSON text already) travel in them as
-- strings, parsed here.
WITH new_runs AS (
    INSERT INTO {schema}.runs
        (id, workflow, status, queue, priority, idempotency_key, input, remaining_steps,
         scheduled_at, output, steps, trace_context, version, forked_from, parent_run_id,
         parent_task_id)
    SELECT r.id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key, r.input::jsonb,
           r.remaining_steps, coalesce(r.run_at, now() + r.delay * interval '1 second'),
           r.output::jsonb, r.steps::jsonb, r.trace_context, r.version, r.forked_from,
           r.parent_run_id, r.parent_task_id
    FROM json_to_recordset(%(runs)s::json)
        AS r(id uuid, workflow text, status text, queue text, priority smallint,
             idempotency_key text, input text, remaining_steps int, run_at timestamptz,
             delay float8, output text, steps text, trace_context text, version text,
             forked_from uuid, parent_run_id uuid, parent_task_id bigint)
    ON CONFLICT (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, scheduled_at, version
), new_tasks AS (
    INSERT INTO {schema}.tasks
        (run_id, step, task_index, workflow, queue, priority, max_attempts, input, run_at,
         version, status, output, finished_at)
    SELECT t.run_id, t.step, t.task_index, t.workflow, t.queue, t.priority, t.max_attempts,
           t.input::jsonb, n.scheduled_at + coalesce(t.delay, 0) * interval '1 second',
           n.version, CASE WHEN t.output IS NULL THEN 'queued' ELSE 'completed' END,
           t.output::jsonb, CASE WHEN t.output IS NOT NULL THEN now() END
    FROM ROWS FROM (json_to_recordset(%(tasks)s::json)
                    AS (run_id uuid, step text, task_index int, workflow text, queue text,
                        priority smallint, max_attempts int, input text, delay float8,
                        output text))
        WITH ORDINALITY
        AS t(run_id, step, task_index, workflow, queue, priority, max_attempts, input, delay,
             output, ord)
    JOIN new_runs n ON n.id = t.run_id
    -- ids in the batch's order: claims take equal tasks oldest (lowest id) first
    ORDER BY t.ord
    RETURNING queue
), notified AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM new_tasks) AS q
)
-- The scalar subquery runs once (an init plan), when the first inserted run is returned; with
-- no run inserted there is no task to announce.
SELECT id::text, (SELECT count(*) FROM notified) AS notified FROM new_runs;

-- name: insert_run
-- insert_runs for one run whose root tasks are plain steps (no map element) that is not one of
-- UniformStarts (those are most starts: insert_uniform_runs), such as a start with an
-- idempotency key or a child run: its values as plain parameters, the tasks' steps and attempt
-- budgets as two arrays in the order of the run's steps. The same results, and the same
-- notification.
WITH new_run AS (
    INSERT INTO {schema}.runs
        (id, workflow, status, queue, priority, idempotency_key, input, remaining_steps,
         scheduled_at, output, steps, trace_context, version, forked_from, parent_run_id,
         parent_task_id)
    VALUES (%(id)s::uuid, %(workflow)s, %(status)s, %(queue)s, %(priority)s,
            %(idempotency_key)s::text, %(input)s::jsonb, %(remaining_steps)s,
            coalesce(%(run_at)s::timestamptz, now() + %(delay)s::float8 * interval '1 second'),
            %(output)s::jsonb, %(steps)s::jsonb, %(trace_context)s::text, %(version)s::text,
            %(forked_from)s::uuid, %(parent_run_id)s::uuid, %(parent_task_id)s::bigint)
    ON CONFLICT (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, workflow, queue, priority, scheduled_at, version
), new_tasks AS (
    INSERT INTO {schema}.tasks
        (run_id, step, workflow, queue, priority, max_attempts, run_at, version)
    SELECT n.id, t.step, n.workflow, n.queue, n.priority, t.max_attempts, n.scheduled_at,
           n.version
    FROM new_run n
    CROSS JOIN unnest(%(task_steps)s::text[], %(task_max_attempts)s::int[]) WITH ORDINALITY
        AS t(step, max_attempts, ord)
    ORDER BY t.ord
    RETURNING queue
), notified AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM new_tasks) AS q
)
SELECT id::text, (SELECT count(*) FROM notified) AS notified FROM new_run;

-- name: insert_uniform_runs
-- A batch of runs that start alike (engines.starts.UniformStarts: a start_many of a workflow
-- without a root map step): every value but the id and the input is the batch's, given once, so
-- that the server parses the steps column once and reads the runs from two arrays. Each run gets
-- the root tasks of the template (its steps, attempt budgets and delays, in the order of the
-- run's steps), in the batch's order: the ids are UUIDv7s made in that order, and claims take
-- equal tasks oldest (lowest id) first. The workers of the queue are notified in the same
-- statement: one round trip in autocommit mode, at a third of COPY's cost for the client.
WITH new_runs AS (
    INSERT INTO {schema}.runs
        (id, workflow, status, queue, priority, input, remaining_steps, scheduled_at, steps,
         trace_context, version)
    SELECT r.id, %(workflow)s, %(status)s, %(queue)s, %(priority)s, r.input,
           %(remaining_steps)s,
           coalesce(%(run_at)s::timestamptz, now() + %(delay)s::float8 * interval '1 second'),
           %(steps)s::jsonb, %(trace_context)s::text, %(version)s::text
    FROM unnest(%(ids)s::uuid[], %(inputs)s::jsonb[]) AS r(id, input)
    RETURNING id, scheduled_at
), new_tasks AS (
    INSERT INTO {schema}.tasks
        (run_id, step, workflow, queue, priority, max_attempts, run_at, version)
    SELECT n.id, t.step, %(workflow)s, %(queue)s, %(priority)s, t.max_attempts,
           n.scheduled_at + t.delay * interval '1 second', %(version)s::text
    FROM new_runs n
    CROSS JOIN unnest(%(task_steps)s::text[], %(task_max_attempts)s::int[],
                      %(task_delays)s::float8[]) WITH ORDINALITY
        AS t(step, max_attempts, delay, ord)
    ORDER BY n.id, t.ord
    RETURNING queue
), notified AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM new_tasks) AS q
)
-- How many runs were inserted (all of them: no key to skip one by), not their ids, which the
-- caller made: a thousand rows less to send and read.
SELECT (SELECT count(*) FROM new_runs) AS inserted, (SELECT count(*) FROM notified) AS notified;

-- name: copy_runs
-- A large batch of plain starts, rows streamed by COPY (see params.copyable), in one
-- transaction with copy_tasks and notify: due now (scheduled_at and created_at default to the
-- transaction's time).
COPY {schema}.runs
    (id, workflow, status, queue, priority, input, remaining_steps, output, steps, trace_context,
     version)
FROM STDIN;

-- name: copy_tasks
-- The root tasks of a batch of copy_runs, in the batch's order (claims take equal tasks
-- oldest, lowest id, first); run_at defaults to the transaction's time, as the runs'.
COPY {schema}.tasks
    (run_id, step, task_index, workflow, queue, priority, max_attempts, input, version)
FROM STDIN;

-- name: store_definitions
-- Each workflow version's blueprint, as the latest process that knows it has it.
INSERT INTO {schema}.workflow_definitions (workflow, version, definition)
SELECT d.workflow, d.version, d.definition::jsonb
FROM json_to_recordset(%(rows)s::json) AS d(workflow text, version text, definition text)
ON CONFLICT (workflow, version) DO UPDATE SET definition = excluded.definition, stored_at = now();

-- name: stored_definitions
-- The stored blueprints of a workflow (NULL: of every workflow), the most recently stored first.
SELECT workflow, version, definition::text, stored_at FROM {schema}.workflow_definitions
WHERE %(workflow)s::text IS NULL OR workflow = %(workflow)s::text
ORDER BY stored_at DESC, workflow, version;

-- name: runs_by_idempotency_key
-- The runs holding the (workflow, idempotency key) pairs of %(rows)s, with their inputs (as
-- text: a start is compared with the run its key found).
SELECT r.id::text, r.workflow, r.idempotency_key, r.input::text
FROM json_to_recordset(%(rows)s::json) AS k(workflow text, key text)
JOIN {schema}.runs r ON r.workflow = k.workflow AND r.idempotency_key = k.key;

-- name: claim_tasks
-- Claims up to %(limit)s due tasks of one queue, best first: priority, then due time, then age.
-- Tasks locked by another transaction are skipped, never waited for. started_at keeps the
-- first claim's time. The claim writes tasks only: a run still pending is marked running with
-- its first outcome (or, for a step that runs long, by its worker soon after the start: see
-- pypgflow/outcomes.py), so the claim never waits for a run's lock nor writes its row; it says
-- which runs are still pending (run_pending).
--
-- Every row after the pick is found through its primary key, whatever the statistics say: the
-- ids travel as an array (id = ANY(ARRAY(SELECT ...))), which only a primary-key lookup serves
-- well, and the run of each claimed task and its dependencies' outputs are read by lateral and
-- correlated subqueries (primary-key and tasks_run_step_index lookups per task) rather than
-- joins the planner could turn into scans. A dependency that is a map step gives its elements'
-- results in order ([] for none).
--
-- A claim commits asynchronously (synchronous_commit off for its transaction alone): the
-- worker gets its tasks without waiting for the write-ahead log to reach the disk, a flush
-- that is most of a claim's time and, on a start's way to its first step, one of the two
-- between the producer's call and the step. Nothing is lost but the claim itself: a crash of
-- the server (not a restart, which flushes the log) may forget the claims of its last fraction
-- of a second (3 x wal_writer_delay), whose tasks are then queued again and run again, as
-- after the crash of their worker (at least once, as always). An outcome commits
-- synchronously, which flushes the log up to it, its claim included: no outcome outlives its
-- claim, and each task still ends once (the guards of complete_tasks and the like).
WITH picked AS (
    SELECT id FROM {schema}.tasks
    WHERE status = 'queued' AND queue = %(queue)s AND run_at <= now()
      AND workflow = ANY(%(workflows)s::text[])
      -- the versions the worker has (workflow@version); a task without one, or versions NULL:
      -- any (one expression: it leaves the planner's estimates of the rest as they were)
      AND coalesce(workflow || '@' || version = ANY(%(versions)s::text[]), true)
    ORDER BY priority, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {schema}.tasks t
    SET status = 'running', attempt = t.attempt + 1, instance_id = %(instance_id)s,
        started_at = coalesce(t.started_at, now())
    WHERE t.id = ANY(ARRAY(SELECT id FROM picked))
      -- (evaluated once, before the update: see "A claim commits asynchronously" above)
      AND (SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL
    RETURNING t.id, t.run_id, t.step, t.task_index, t.workflow, t.attempt, t.max_attempts, t.input,
              t.priority, t.run_at, t.version, t.child_run_id
)
SELECT c.id, c.run_id::text AS run_id, c.step, c.task_index, c.workflow, c.attempt,
       c.max_attempts, c.input, r.input AS run_input,
       -- once per step of a run, as text: the elements of a map share their step's
       -- (claimed_tasks gives the others the first's, each decoded on its first read), which
       -- would otherwise be read, sent and decoded for each one
       CASE WHEN c.nth = 1 THEN
       (SELECT jsonb_object_agg(dep.name, CASE
                   WHEN (r.steps -> dep.name ->> 'is_map')::boolean THEN
                       coalesce((SELECT jsonb_agg(e.output ORDER BY e.task_index)
                                 FROM {schema}.tasks e
                                 WHERE e.run_id = c.run_id AND e.step = dep.name
                                   AND e.task_index IS NOT NULL), '[]'::jsonb)
                   ELSE (SELECT p.output FROM {schema}.tasks p
                         WHERE p.run_id = c.run_id AND p.step = dep.name
                           AND p.task_index IS NULL)
               END)
        FROM jsonb_array_elements_text(r.steps -> c.step -> 'depends_on') AS dep(name))::text
       END AS dependency_outputs,
       r.status = 'pending' AS run_pending, r.trace_context, c.version, c.priority,
       c.child_run_id::text,
       -- a subflow task woken by its child's end: how the child ended
       (SELECT jsonb_build_object('status', ch.status, 'output', ch.output, 'error', ch.error)
        FROM {schema}.runs ch WHERE ch.id = c.child_run_id) AS child
FROM (SELECT claimed.*,
             row_number() OVER (PARTITION BY claimed.run_id, claimed.step ORDER BY claimed.id)
                 AS nth
      FROM claimed) AS c
CROSS JOIN LATERAL (SELECT input, steps, status, trace_context FROM {schema}.runs
                    WHERE id = c.run_id) AS r
-- in claim order: the worker starts them in this order
ORDER BY c.priority, c.run_at, c.id;

-- name: next_due
-- Seconds until the first queued task of these queues and workflows is due (negative: due
-- already; NULL: none queued). Read as the first task of each queue and priority, in the order
-- of tasks_claim (queue, priority, run_at, id): a few index probes, where min(run_at) over
-- every queued task would read the whole backlog (or every task waiting for its retry) at each
-- idle check. Priorities are 0 to 9: a task has its run's (runs_priority_is_0_to_9).
SELECT extract(epoch FROM min(first.run_at) - now()) AS seconds
FROM unnest(%(queues)s::text[]) AS q(queue)
CROSS JOIN generate_series(0, 9) AS p(priority)
CROSS JOIN LATERAL (
    SELECT t.run_at FROM {schema}.tasks t
    WHERE t.status = 'queued' AND t.queue = q.queue AND t.priority = p.priority
      AND t.workflow = ANY(%(workflows)s::text[])
      AND coalesce(t.workflow || '@' || t.version = ANY(%(versions)s::text[]), true)
    ORDER BY t.run_at
    LIMIT 1
) AS first;

-- name: lock_runs
-- Every change to a run's steps and tasks (but claims) happens under its row lock, taken in id
-- order so that transactions touching the same runs never deadlock. The row holds the run's
-- steps: one lock and one read give orchestration all it decides on. The steps come as text:
-- the engine decodes each distinct text once (see engines/steps.py).
SELECT id::text, workflow, status, queue, priority, remaining_steps, steps::text, parent_task_id
FROM {schema}.runs WHERE id = ANY(%(ids)s::uuid[])
ORDER BY id
FOR UPDATE;

-- name: complete_tasks
-- Guarded: only the attempt that is still running may complete; late or duplicate completions
-- change nothing. The output is the step's (or the map element's). The tasks are found by id
-- only (as in retry_tasks and fail_tasks): "status || ''" checks the status of the rows found
-- but matches no index, so no plan can read every running task through tasks_running_instance
-- instead (dead entries and all, until a vacuum).
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS d(id bigint, attempt int, output text)
)
UPDATE {schema}.tasks t
SET status = 'completed', finished_at = now(), output = d.output::jsonb
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.attempt = d.attempt AND t.status || '' = 'running'
RETURNING t.id, t.run_id::text AS run_id, t.step, t.task_index;

-- name: retry_tasks
-- Guarded, and its tasks found by id only, as in complete_tasks.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(id bigint, attempt int, delay float8, error text)
)
UPDATE {schema}.tasks t
SET status = 'queued', run_at = now() + d.delay * interval '1 second',
    errors = t.errors || jsonb_build_array(d.error::jsonb), gate_wait = NULL
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.attempt = d.attempt AND t.status || '' = 'running'
RETURNING t.run_id::text;

-- name: fail_tasks
-- Guarded, and its tasks found by id only, as in complete_tasks.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS d(id bigint, attempt int, error text)
)
UPDATE {schema}.tasks t
SET status = 'failed', finished_at = now(),
    errors = t.errors || jsonb_build_array(d.error::jsonb)
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.attempt = d.attempt AND t.status || '' = 'running'
RETURNING t.id, t.run_id::text AS run_id, t.step, t.task_index, t.attempt;

-- name: step_outputs
-- The outputs of completed plain steps (a map step's are its elements': map_outputs).
SELECT step, output::text FROM {schema}.tasks
WHERE run_id = %(run_id)s::uuid AND step = ANY(%(names)s::text[]) AND task_index IS NULL;

-- name: map_outputs
SELECT output::text FROM {schema}.tasks
WHERE run_id = %(run_id)s::uuid AND step = %(step)s
ORDER BY task_index;

-- name: run_input
SELECT input::text FROM {schema}.runs WHERE id = %(run_id)s::uuid;

-- name: park_tasks
-- Subflow tasks whose function returned their child's input: back to the queue, due only when
-- their child finishes (wake_parent_tasks; their delay is orchestration.NEVER), holding no slot
-- meanwhile; the attempt is given back (the claim that takes the task again counts it anew).
-- Guarded as complete_tasks is.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(id bigint, attempt int, child_run_id uuid, delay float8)
)
UPDATE {schema}.tasks t
SET status = 'queued', run_at = now() + d.delay * interval '1 second', attempt = t.attempt - 1,
    child_run_id = d.child_run_id
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.attempt = d.attempt AND t.status || '' = 'running'
RETURNING t.id, t.run_id::text;

-- name: wake_parent_tasks
-- Child runs finished: the subflow tasks waiting for them are due now (a task cancelled or
-- finished meanwhile stays as it is), and the workers of their queues are notified, in the
-- same statement (it may run in a pipeline, where nothing is read back).
WITH woken AS (
    UPDATE {schema}.tasks SET run_at = now()
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'queued' AND child_run_id IS NOT NULL
    RETURNING queue
)
SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM woken) AS q;

-- name: active_children
-- The unfinished child runs of these runs.
SELECT id::text FROM {schema}.runs
WHERE parent_run_id = ANY(%(ids)s::uuid[]) AND status IN ('pending', 'running');

-- name: pending_signals
-- The signals of that name sent to a run and not taken by a wait step yet, oldest first.
SELECT id, data::text FROM {schema}.signals
WHERE run_id = %(run_id)s::uuid AND name = %(name)s AND step IS NULL
ORDER BY id;

-- name: consume_signals
-- Pending signals taken by the wait steps that they completed.
UPDATE {schema}.signals s SET step = d.step, consumed_at = now()
FROM json_to_recordset(%(rows)s::json) AS d(id bigint, step text)
WHERE s.id = d.id;

-- name: insert_signal
-- A signal sent to a run (its run locked): taken at once by the wait step it completed
-- (%(step)s), or kept (step NULL) for the wait step that reaches it.
INSERT INTO {schema}.signals (run_id, name, data, step, consumed_at)
VALUES (%(run_id)s::uuid, %(name)s, %(data)s::jsonb, %(step)s::text,
        CASE WHEN %(step)s::text IS NOT NULL THEN now() END)
RETURNING id;

-- name: complete_waiting_task
-- A signal completes the task of the wait step waiting for it. Guarded: only while it is still
-- queued; a worker that claimed it meanwhile is timing it out.
UPDATE {schema}.tasks
SET status = 'completed', finished_at = now(), output = %(data)s::jsonb
WHERE run_id = %(run_id)s::uuid AND step = %(step)s AND task_index IS NULL
  AND status = 'queued'
RETURNING id;

-- name: delete_gate_holders_of_runs
-- The holders of runs just deleted (prune_runs): a key never admitted again keeps none.
DELETE FROM {schema}.gate_holders WHERE run_id = ANY(%(ids)s::uuid[]);

-- name: prune_old_rate_tokens
-- The tokens of a rate limit older than its window (and margin), whatever their key: the keys
-- admitted no more keep none. Keys of the limit NAME are 'rate:NAME' and 'rate:NAME:...'.
DELETE FROM {schema}.rate_tokens
WHERE (key = %(key)s OR (key > %(key)s || ':' AND key < %(key)s || ';'))
  AND taken_at < now() - %(window_seconds)s::float8 * interval '1 second'
RETURNING key;

-- name: delete_signals_of_runs
-- The signals of runs just deleted (prune_runs).
DELETE FROM {schema}.signals WHERE run_id = ANY(%(ids)s::uuid[]);

-- name: update_runs
-- Writes the runs as orchestration decided, their steps with them, and announces those that
-- finished on {done_channel} (delivered when the transaction commits): in this statement, so
-- that a batch that finishes runs costs no statement more than one that does not. A run
-- marked running by its first outcome started when that task was first claimed.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(id uuid, status text, remaining_steps int, output text, error text, steps text)
), updated AS (
    UPDATE {schema}.runs r
    SET status = d.status, remaining_steps = d.remaining_steps,
        output = d.output::jsonb, error = d.error::jsonb, steps = d.steps::jsonb,
        started_at = CASE WHEN d.status <> 'pending'
                          THEN coalesce(r.started_at,
                                        (SELECT min(t.started_at) FROM {schema}.tasks t
                                         WHERE t.run_id = r.id),
                                        now())
                          ELSE r.started_at END,
        finished_at = CASE WHEN d.status IN ('completed', 'failed', 'cancelled') THEN now() END
    FROM d
    WHERE r.id = ANY(ARRAY(SELECT id FROM d)) AND r.id = d.id
    RETURNING r.id, r.status
), finished AS (
    SELECT id::text AS id, (row_number() OVER (ORDER BY id) - 1) / 200 AS chunk
    FROM updated WHERE status IN ('completed', 'failed', 'cancelled')
)
SELECT pg_notify({done_channel_name}, string_agg(id, ',' ORDER BY id))
FROM finished GROUP BY chunk;

-- name: insert_tasks
-- A new task carries its run's version (the run is locked: a primary-key lookup, in cache).
-- It is due in its delay (a start delay, a wait step's timeout), or completed already with its
-- output (a wait step whose signal had come).
INSERT INTO {schema}.tasks
    (run_id, step, task_index, workflow, queue, priority, max_attempts, input, version, run_at,
     status, output, finished_at)
SELECT d.run_id, d.step, d.task_index, d.workflow, d.queue, d.priority, d.max_attempts,
       d.input::jsonb, (SELECT r.version FROM {schema}.runs r WHERE r.id = d.run_id),
       now() + d.delay * interval '1 second',
       CASE WHEN d.completed THEN 'completed' ELSE 'queued' END, d.output::jsonb,
       CASE WHEN d.completed THEN now() END
FROM json_to_recordset(%(rows)s::json)
    AS d(run_id uuid, step text, task_index int, workflow text, queue text, priority smallint,
         max_attempts int, input text, delay float8, output text, completed boolean);

-- name: cancel_tasks_of_runs
UPDATE {schema}.tasks SET status = 'cancelled', finished_at = now()
WHERE run_id = ANY(%(ids)s::uuid[]) AND status IN ('queued', 'running');

-- name: requeue_tasks
-- A resumed step's unfinished tasks go back to the queue with a fresh attempt budget.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(run_id uuid, step text, budget int, delay float8)
)
UPDATE {schema}.tasks t
SET status = 'queued', run_at = now() + d.delay * interval '1 second', finished_at = NULL,
    max_attempts = t.attempt + d.budget, child_run_id = NULL
FROM d
WHERE t.run_id = ANY(ARRAY(SELECT run_id FROM d))
  AND t.run_id = d.run_id AND t.step = d.step AND t.status <> 'completed';

-- name: notify
SELECT pg_notify(%(channel)s, queue) FROM unnest(%(queues)s::text[]) AS queue;

-- name: notify_finished
-- Announces runs that finished in this transaction without update_runs (a run that fails or
-- completes as it starts), the same way: their ids, at most 200 per notification.
SELECT pg_notify({done_channel_name}, string_agg(id, ',' ORDER BY id))
FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 200 AS chunk
      FROM unnest(%(ids)s::text[]) AS id) AS finished
GROUP BY chunk;

-- name: listen
LISTEN {channel};

-- name: listen_finished
LISTEN {done_channel};

-- name: get_run
SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version, forked_from::text,
       parent_run_id::text
FROM {schema}.runs WHERE id = %(id)s::uuid;

-- name: run_ids_by_prefix
-- The ids that start with a prefix: the uuids from its first to its last (ids.prefix_bounds),
-- up to %(limit)s of them, in order. Walked one id at a time, each the next after the last
-- (a primary-key probe with a lower bound only, which an ordered index scan stopping at one row
-- always serves): a plain range "BETWEEN lo AND hi ORDER BY id LIMIT n" may be planned as a
-- bitmap scan of the whole range, then a sort, and every run made in the same minute shares
-- the first 8 digits.
WITH RECURSIVE found(id, n) AS (
    SELECT (SELECT r.id FROM {schema}.runs r WHERE r.id >= %(lo)s::uuid ORDER BY r.id LIMIT 1), 1
  UNION ALL
    SELECT (SELECT r.id FROM {schema}.runs r WHERE r.id > found.id ORDER BY r.id LIMIT 1), n + 1
    FROM found
    WHERE found.id <= %(hi)s::uuid AND n < %(limit)s
)
SELECT id::text FROM found WHERE id <= %(hi)s::uuid ORDER BY n;

-- name: list_runs
-- Runs newest first, the id breaking ties (the runs of one start_many share their created_at):
-- runs.id, the uuid the indexes hold (a bare "id" would name the text selected). A statement per
-- filter (this one for none, then by status, by workflow, by both), each reading an index in
-- its order and stopping after %(limit)s rows. One statement with optional filters ("status IS
-- NULL OR ...") could use no index for its filters once planned for any parameter values, as a
-- prepared statement's generic plan is. With no filter, each status is read as in
-- list_runs_by_status, the newest %(limit)s of each, and the newest of those kept: no index of
-- runs by creation alone is needed (each index costs an entry at every change of status).
SELECT l.id, l.workflow, l.status, l.queue, l.priority, l.idempotency_key, l.input, l.output,
       l.error, l.created_at, l.scheduled_at, l.started_at, l.finished_at, l.version
FROM (VALUES ('pending'), ('running'), ('completed'), ('failed'), ('cancelled'))
    AS s(status)
CROSS JOIN LATERAL (
    SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
           created_at, scheduled_at, started_at, finished_at, version, runs.id AS uuid
    FROM {schema}.runs
    WHERE (status, created_at) >= (s.status, '-infinity')
      AND (status, created_at) <= (s.status, 'infinity')
    ORDER BY status DESC, created_at DESC, runs.id DESC
    LIMIT %(limit)s
) AS l
ORDER BY l.created_at DESC, l.uuid DESC
LIMIT %(limit)s;

-- name: list_runs_by_status
-- Through runs_status_created (status, created_at, id), whatever the statistics say. The status
-- is a range of that index written as row comparisons (exactly the runs of that status: every
-- created_at lies within [-infinity, infinity]), not an equality, and the order starts with it:
-- - with an equality, the planner takes the order as created_at's alone, and may walk
--   runs_created newest first skipping the runs of other statuses (after an ANALYZE that saw
--   no backlog, through the whole backlog before the first failed run); ordered by status
--   first, only runs_status_created gives the order;
-- - a row comparison is estimated from its first column's inequality, never as the handful of
--   rows an equality is estimated at without statistics, which makes the planner read every
--   run of the status (bitmap scan) and sort them rather than read the index in order.
SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version
FROM {schema}.runs
WHERE (status, created_at) >= (%(status)s, '-infinity')
  AND (status, created_at) <= (%(status)s, 'infinity')
ORDER BY status DESC, created_at DESC, runs.id DESC
LIMIT %(limit)s;

-- name: list_runs_by_workflow
-- Each status of the workflow read as in list_runs_by_status_and_workflow, the newest %(limit)s
-- of each, and the newest of those kept (as list_runs does for every workflow).
SELECT l.id, l.workflow, l.status, l.queue, l.priority, l.idempotency_key, l.input, l.output,
       l.error, l.created_at, l.scheduled_at, l.started_at, l.finished_at, l.version
FROM (VALUES ('pending'), ('running'), ('completed'), ('failed'), ('cancelled'))
    AS s(status)
CROSS JOIN LATERAL (
    SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
           created_at, scheduled_at, started_at, finished_at, version, runs.id AS uuid
    FROM {schema}.runs
    WHERE (ARRAY[workflow, status], created_at)
            >= (ARRAY[%(workflow)s, s.status]::text[], '-infinity')
      AND (ARRAY[workflow, status], created_at)
            <= (ARRAY[%(workflow)s, s.status]::text[], 'infinity')
    ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
    LIMIT %(limit)s
) AS l
ORDER BY l.created_at DESC, l.uuid DESC
LIMIT %(limit)s;

-- name: list_runs_by_status_and_workflow
-- Through runs_workflow_status_created, an index on (ARRAY[workflow, status], created_at, id):
-- the pair is one key, a range of that index (as in list_runs_by_status), and the order starts
-- with it, which no other index gives. Two columns could not be filtered so on an index
-- (workflow, status, created_at, id): btree bounds a scan by a row comparison's first column
-- only, so a scan for (workflow, status, ...) would not stop where the status's runs end but
-- where the workflow's do; and with an equality on either column, the planner may read the
-- index on the other one (runs_status_created, runs_workflow_created) skipping the runs that do
-- not match, or read every match and sort them, when the statistics make the matches look few.
-- (runs_workflow_created is gone; the other reasons stand.)
SELECT id::text, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version
FROM {schema}.runs
WHERE (ARRAY[workflow, status], created_at)
        >= (ARRAY[%(workflow)s, %(status)s]::text[], '-infinity')
  AND (ARRAY[workflow, status], created_at)
        <= (ARRAY[%(workflow)s, %(status)s]::text[], 'infinity')
ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
LIMIT %(limit)s;

-- name: run_result
SELECT status, output, error FROM {schema}.runs WHERE id = %(id)s::uuid;

-- name: runs_still_going
-- Of the runs a process waits for, those not finished yet (pending or running; a run that is
-- gone is not): what waiters re-check when they may have missed an announcement.
SELECT id::text FROM {schema}.runs
WHERE id = ANY(%(ids)s::uuid[]) AND status IN ('pending', 'running');

-- name: step_infos
-- A run's steps (from its steps column) with what their tasks say: first claim, last finish,
-- most attempts, latest instance, the output (a plain step's task's, or a map step's elements'
-- results in order, [] for none), a wait step's signal, when its queued tasks are due and since
-- when they are queued, and (last, as SqlEngine._step_errors expects) every attempt's error, by
-- attempt then element. A step that never had a task finished when its run did.
SELECT s.name, (s.state ->> 'position')::int AS position, s.state ->> 'status' AS status,
       s.state -> 'depends_on' AS depends_on,
       coalesce((s.state ->> 'is_map')::boolean, false) AS is_map,
       (s.state ->> 'task_count')::int AS task_count,
       CASE WHEN s.state ->> 'status' <> 'completed' THEN NULL
            WHEN (s.state ->> 'is_map')::boolean THEN coalesce(t.elements, '[]'::jsonb)
            ELSE t.output END AS output,
       t.started_at,
       CASE WHEN s.state ->> 'status' IN ('completed', 'failed', 'cancelled')
            THEN coalesce(t.finished_at, r.finished_at) END AS finished_at,
       coalesce(t.attempts, 0) AS attempts, t.instance_id,
       s.state ->> 'signal' AS signal, t.due_at, t.queued_since,
       coalesce(t.children, '[]'::jsonb) AS child_run_ids, t.gate_wait,
       coalesce(e.errors, '[]'::jsonb) AS errors
FROM {schema}.runs r
CROSS JOIN LATERAL jsonb_each(r.steps) AS s(name, state)
LEFT JOIN LATERAL (
    SELECT min(k.started_at) AS started_at, max(k.finished_at) AS finished_at,
           max(k.attempt) AS attempts,
           (array_agg(k.instance_id ORDER BY k.started_at DESC NULLS LAST))[1] AS instance_id,
           (array_agg(k.output) FILTER (WHERE k.task_index IS NULL))[1] AS output,
           jsonb_agg(k.output ORDER BY k.task_index) FILTER (WHERE k.task_index IS NOT NULL)
               AS elements,
           min(k.run_at) FILTER (WHERE k.status = 'queued') AS due_at,
           min(k.created_at) FILTER (WHERE k.status = 'queued') AS queued_since,
           jsonb_agg(k.child_run_id ORDER BY k.task_index)
               FILTER (WHERE k.child_run_id IS NOT NULL) AS children,
           min(k.gate_wait) FILTER (WHERE k.status = 'queued') AS gate_wait
    FROM {schema}.tasks k WHERE k.run_id = r.id AND k.step = s.name
) AS t ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(x.error ORDER BY (x.error ->> 'attempt')::int, k.task_index) AS errors
    FROM {schema}.tasks k
    CROSS JOIN LATERAL jsonb_array_elements(k.errors) AS x(error)
    WHERE k.run_id = r.id AND k.step = s.name
) AS e ON true
WHERE r.id = %(id)s::uuid
ORDER BY position;

-- name: running_tasks_still_running
-- Of the tasks a worker is executing, those still running (the others were cancelled or rescued).
-- Found by id only: "status || ''" matches no index (see complete_tasks).
SELECT id FROM {schema}.tasks WHERE id = ANY(%(ids)s::bigint[]) AND status || '' = 'running';

-- name: upsert_instance
INSERT INTO {schema}.instances (id, hostname, pid, queues, load, versions)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s::jsonb, 0, %(versions)s::jsonb)
ON CONFLICT (id) DO UPDATE
SET hostname = excluded.hostname, pid = excluded.pid, queues = excluded.queues, load = 0,
    versions = excluded.versions,
    started_at = now(), heartbeat_at = now();

-- name: heartbeat_instance
UPDATE {schema}.instances SET heartbeat_at = now(), load = %(load)s WHERE id = %(id)s;

-- name: delete_instance
DELETE FROM {schema}.instances WHERE id = %(id)s;

-- name: list_instances
SELECT id, hostname, pid, queues, load, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at) AS heartbeat_age, versions
FROM {schema}.instances ORDER BY started_at, id;

-- name: unknown_workflows_waiting
SELECT DISTINCT workflow FROM {schema}.tasks
WHERE status = 'queued' AND queue = ANY(%(queues)s::text[]) AND run_at <= now()
  AND workflow <> ALL(%(workflows)s::text[])
LIMIT 20;

-- name: delete_task_gate_holders
-- The holders of these tasks' concurrency gates, dropped when the tasks go back to the queue
-- with their attempt given back (handed back, parked): the claim that takes one again counts
-- that attempt anew, and its holder would seem to hold the gate again.
DELETE FROM {schema}.gate_holders WHERE task_id = ANY(%(ids)s::bigint[]);

-- name: release_tasks
-- Hands tasks back on graceful shutdown: queued again, the interrupted attempt not counted,
-- in their place in the queue (run_at kept: they were due when claimed).
UPDATE {schema}.tasks SET status = 'queued', attempt = attempt - 1
WHERE id = ANY(%(ids)s::bigint[]) AND instance_id = %(instance_id)s AND status = 'running'
RETURNING queue, id;

-- name: release_unheld_tasks
-- After a claim whose answer was lost (the connection dropped, maybe after its commit): the
-- tasks running for this instance that it does not hold (keep) were claimed by that claim and
-- never started. Queued again in their place, the attempt the claim counted given back.
UPDATE {schema}.tasks SET status = 'queued', attempt = attempt - 1
WHERE status = 'running' AND instance_id = %(instance_id)s AND id <> ALL(%(keep)s::bigint[])
RETURNING queue, id;

-- name: lost_tasks_exist
-- (rescue: the statements of fleet.py's rescue_tasks, hand_back_lost_tasks and
-- heartbeat_or_register)
-- Whether any task is running for an instance that is lost: silent for more than
-- %(stale_after)s seconds, or not registered at all. Cheap: every instance asks at every
-- heartbeat, and the running tasks are a small partial index.
SELECT EXISTS (
    SELECT 1 FROM {schema}.tasks t
    LEFT JOIN {schema}.instances i ON i.id = t.instance_id
    WHERE t.status = 'running'
      AND (i.id IS NULL OR i.heartbeat_at < now() - %(stale_after)s::float8 * interval '1 second')
      AND t.instance_id IS DISTINCT FROM %(rescuer)s
);

-- name: lost_tasks
-- The running tasks of lost instances, with when each instance was last seen (NULL: not
-- registered) and how many tasks it lost at once (together: the poison-pill rule charges a loss
-- only to a task lost alone). Not locked: the updates that follow are guarded, under their runs'
-- locks. The rescuer's own tasks are left to it (a live worker knows what it holds). A batch
-- takes whole instances (the first whose tasks start within %(limit)s): a count split across
-- batches would make the last task of a large loss look lost alone.
SELECT id, run_id, step, task_index, attempt, max_attempts, rescues, instance_id, queue,
       heartbeat_at, silent_for, lone_losses, together
FROM (
    SELECT *, min(n) OVER (PARTITION BY instance_id) AS first_n
    FROM (
        SELECT t.id, t.run_id::text AS run_id, t.step, t.task_index, t.attempt, t.max_attempts,
               t.rescues, t.instance_id, t.queue, i.heartbeat_at,
               extract(epoch FROM now() - i.heartbeat_at) AS silent_for, t.lone_losses,
               count(*) OVER (PARTITION BY t.instance_id) AS together,
               row_number() OVER (ORDER BY t.instance_id, t.id) AS n
        FROM {schema}.tasks t
        LEFT JOIN {schema}.instances i ON i.id = t.instance_id
        WHERE t.status = 'running'
          AND (i.id IS NULL
               OR i.heartbeat_at < now() - %(stale_after)s::float8 * interval '1 second')
          AND t.instance_id IS DISTINCT FROM %(rescuer)s
    ) AS numbered
) AS lost
WHERE first_n <= %(limit)s
ORDER BY id;

-- name: own_running_tasks
-- The tasks still running for this instance but those it holds (keep): abandoned while it was
-- cut off from the database, claimed by a claim whose answer was lost, or held by an earlier
-- process with the same instance id; together: how many there are.
SELECT t.id, t.run_id::text, t.step, t.task_index, t.attempt, t.max_attempts, t.rescues,
       t.instance_id, t.queue, i.heartbeat_at, extract(epoch FROM now() - i.heartbeat_at),
       t.lone_losses, count(*) OVER () AS together
FROM {schema}.tasks t
LEFT JOIN {schema}.instances i ON i.id = t.instance_id
WHERE t.status = 'running' AND t.instance_id = %(instance_id)s
  AND t.id <> ALL(%(keep)s::bigint[])
ORDER BY t.id;

-- name: requeue_lost_tasks
-- Guarded: only the attempt seen running for the lost instance is rescued, so that two rescuers
-- racing rescue it once. With stale_after, the instance must still be silent (it may have come
-- back since the tasks were selected). The attempt stays counted. run_at is kept: the task
-- was due when it was claimed, and keeps its place in the queue rather than waiting behind
-- everything started since. lone_losses + charged: see orchestration.task_lost.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(id bigint, attempt int, instance_id text, error text, charged int)
)
UPDATE {schema}.tasks t
SET status = 'queued', rescues = t.rescues + 1, lone_losses = t.lone_losses + d.charged,
    errors = t.errors || jsonb_build_array(d.error::jsonb)
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.status = 'running' AND t.attempt = d.attempt
  AND t.instance_id = d.instance_id
  AND (%(stale_after)s::float8 IS NULL OR NOT EXISTS (
      SELECT 1 FROM {schema}.instances i
      WHERE i.id = t.instance_id
        AND i.heartbeat_at >= now() - %(stale_after)s::float8 * interval '1 second'))
RETURNING t.id, t.run_id::text, t.queue;

-- name: fail_lost_tasks
-- The same guard, for lost tasks that fail for good (no attempts left, or a poison pill).
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(id bigint, attempt int, instance_id text, error text, charged int)
)
UPDATE {schema}.tasks t
SET status = 'failed', finished_at = now(), rescues = t.rescues + 1,
    lone_losses = t.lone_losses + d.charged,
    errors = t.errors || jsonb_build_array(d.error::jsonb)
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.status = 'running' AND t.attempt = d.attempt
  AND t.instance_id = d.instance_id
  AND (%(stale_after)s::float8 IS NULL OR NOT EXISTS (
      SELECT 1 FROM {schema}.instances i
      WHERE i.id = t.instance_id
        AND i.heartbeat_at >= now() - %(stale_after)s::float8 * interval '1 second'))
RETURNING t.id, t.run_id::text, t.step, t.task_index, t.attempt;

-- name: touch_instance
-- A heartbeat that says whether the instance is still registered (no row: register again).
UPDATE {schema}.instances SET heartbeat_at = now(), load = %(load)s WHERE id = %(id)s
RETURNING id;

-- name: acquire_lease
-- (leadership, schedules, retention: the statements of fleet.py's last section; instants are
-- passed as unix epoch seconds)
-- Takes the lease for %(ttl)s seconds of database time: inserted if nobody ever held it, taken
-- over if it expired, extended if this holder has it. No row returned: another holder has it.
-- Concurrent callers serialize on the row (ON CONFLICT locks it), so one of them wins.
INSERT INTO {schema}.leases AS l (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, now() + %(ttl)s::float8 * interval '1 second')
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at <= now()
RETURNING l.holder;

-- name: release_lease
DELETE FROM {schema}.leases WHERE name = %(name)s AND holder = %(holder)s
RETURNING holder;

-- name: lease_holder
SELECT holder, extract(epoch FROM expires_at - now())::float8 AS expires_in
FROM {schema}.leases WHERE name = %(name)s AND expires_at > now();

-- name: upsert_schedules
-- The schedules a worker's code defines. Their last tick is kept; the next tick is replaced
-- when the cron or time zone changed (or none was known); updated_at moves only when the
-- definition changed (a new schedule's ticks count from then).
INSERT INTO {schema}.schedules AS s
    (name, cron, workflow, input, queue, priority, timezone, next_tick_at)
SELECT d.name, d.cron, d.workflow, d.input::jsonb, d.queue, d.priority, d.timezone,
       to_timestamp(d.next_tick_at)
FROM json_to_recordset(%(rows)s::json)
    AS d(name text, cron text, workflow text, input text, queue text, priority smallint,
         timezone text, next_tick_at float8)
ORDER BY d.name
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, workflow = excluded.workflow, input = excluded.input,
    queue = excluded.queue, priority = excluded.priority, timezone = excluded.timezone,
    next_tick_at = CASE WHEN s.next_tick_at IS NULL OR s.cron <> excluded.cron
                             OR s.timezone <> excluded.timezone
                        THEN excluded.next_tick_at ELSE s.next_tick_at END,
    updated_at = CASE WHEN (s.cron, s.workflow, s.input, s.queue, s.priority, s.timezone)
                           IS DISTINCT FROM (excluded.cron, excluded.workflow, excluded.input,
                                             excluded.queue, excluded.priority, excluded.timezone)
                      THEN now() ELSE s.updated_at END;

-- name: schedule_states
SELECT name, last_tick_at, next_tick_at, updated_at FROM {schema}.schedules;

-- name: record_schedule_ticks
-- The last tick never moves back (greatest ignores NULL: no new tick keeps the old one), so a
-- deposed leader finishing a pass late cannot make the next leader start old ticks again.
UPDATE {schema}.schedules s
SET last_tick_at = greatest(s.last_tick_at, to_timestamp(d.last_tick_at)),
    next_tick_at = to_timestamp(d.next_tick_at)
FROM json_to_recordset(%(rows)s::json) AS d(name text, last_tick_at float8, next_tick_at float8)
WHERE s.name = d.name;

-- name: list_schedules
SELECT name, cron, workflow, queue, priority, timezone, last_tick_at, next_tick_at, input
FROM {schema}.schedules ORDER BY name;

-- name: delete_schedule
-- An operator's removal of a stored schedule (one that no running instance defines any more: a
-- leader that defines it stores it again).
DELETE FROM {schema}.schedules WHERE name = %(name)s RETURNING name;

-- name: prune_runs
-- One bounded batch of retention: up to %(batch)s runs finished long enough ago (completed and
-- cancelled after completed_before seconds, failed after failed_before), locked in id order
-- (as lock_runs locks them) and deleted; their tasks go with them (delete_tasks_of_runs, in
-- the same transaction). Each status is read through runs_status_created, oldest first, among
-- the runs created before the cutoff (a run finishes after it is created): a pass reads only
-- what it deletes and the few runs that finished after the cutoff. Within a pass, each status
-- is read on from the newest creation time the batch before deleted (%(completed_after)s and
-- so on; NULL at the start): the index entries of the runs already deleted stay until a VACUUM,
-- and reading over them again in every batch would make a pass cost the square of what it
-- deletes. Each range is an equality on the status and bounds on created_at, not row
-- comparisons: btree starts a scan at a row comparison's position but stops it at one's bound
-- only where its first column (the status) decides, so with one as the end, a pass that finds
-- nothing old enough (the last batch of every pass) would read every index entry of the
-- status, the whole history (about a second at ten million runs); and beside an equality on
-- the status, a row comparison no longer positions the start. prune_plan, run first in the
-- batch's transaction, keeps the equality from making the planner read the range otherwise
-- than in order (tests/postgres/test_retention_reads.py). The conditions are
-- repeated where the rows are locked: a run resumed meanwhile (retry) is re-checked and kept.
-- Each deleted run's status and creation time are returned.
WITH doomed AS (
    (SELECT id FROM {schema}.runs
     WHERE status = 'completed'
       AND created_at >= coalesce(%(completed_after)s::timestamptz, '-infinity')
       AND created_at < now() - %(completed_before)s::float8 * interval '1 second'
       AND finished_at < now() - %(completed_before)s::float8 * interval '1 second'
     ORDER BY status, created_at
     LIMIT %(batch)s)
    UNION ALL
    (SELECT id FROM {schema}.runs
     WHERE status = 'cancelled'
       AND created_at >= coalesce(%(cancelled_after)s::timestamptz, '-infinity')
       AND created_at < now() - %(completed_before)s::float8 * interval '1 second'
       AND finished_at < now() - %(completed_before)s::float8 * interval '1 second'
     ORDER BY status, created_at
     LIMIT %(batch)s)
    UNION ALL
    (SELECT id FROM {schema}.runs
     WHERE status = 'failed'
       AND created_at >= coalesce(%(failed_after)s::timestamptz, '-infinity')
       AND created_at < now() - %(failed_before)s::float8 * interval '1 second'
       AND finished_at < now() - %(failed_before)s::float8 * interval '1 second'
     ORDER BY status, created_at
     LIMIT %(batch)s)
    LIMIT %(batch)s
), locked AS (
    SELECT id FROM {schema}.runs r
    WHERE r.id = ANY(ARRAY(SELECT id FROM doomed))
      AND ((r.status IN ('completed', 'cancelled')
            AND r.finished_at < now() - %(completed_before)s::float8 * interval '1 second')
           OR (r.status = 'failed'
               AND r.finished_at < now() - %(failed_before)s::float8 * interval '1 second'))
    ORDER BY id
    FOR UPDATE
)
DELETE FROM {schema}.runs r
WHERE r.id = ANY(ARRAY(SELECT id FROM locked))
RETURNING r.id::text, r.status, r.created_at;

-- name: prune_plan
-- For the rest of a prune batch's transaction, no bitmap scan and no sort: the batch then reads
-- each status through runs_status_created in its order and stops at its limit. Its ranges end
-- with an equality on the status (see prune_runs), which the planner estimates at a handful of
-- rows when the table has no statistics, and it would rather read every run old enough (a
-- bitmap scan: a whole day's runs for a batch of a thousand) and sort them.
SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true);

-- name: delete_tasks_of_runs
-- The tasks of runs just deleted (prune_runs), found through tasks_run_step_index.
DELETE FROM {schema}.tasks WHERE run_id = ANY(%(ids)s::uuid[]);

-- name: prune_instances
-- Instances silent for over %(offline_for)s seconds: long gone (their tasks were rescued).
DELETE FROM {schema}.instances
WHERE heartbeat_at < now() - %(offline_for)s::float8 * interval '1 second'
RETURNING id;

-- ============================================================================================
-- The operators' reads (engines/insight.py: the dashboard and its HTTP API). Each is bounded:
-- read through an index in its order and stopped after a page, a window or a cap, whatever
-- the number of runs; nothing here writes.
-- ============================================================================================

-- name: find_runs
-- A page of runs newest first, of the statuses given, between two positions (created_at, id):
-- the cursor's, exclusive, and the time range's end. Each status is read through
-- runs_status_created in its order (as list_runs_by_status reads it: bounded by row
-- comparisons starting with the status, whatever the statistics say), positions only (an
-- index-only scan once vacuumed), the newest %(scan)s of them merged; the runs of those
-- positions are then read by primary key and the filters no index serves (queue, search in
-- input and output) checked on them. %(scan)s is the page's size plus one when there are no
-- such filters, else a window (insight.SCAN_WINDOW). Every row also says how many positions
-- were read and the oldest one (the last three columns); with no match at all, one row of
-- NULL runs says so. Without a start of the time range, every run older than the cursor
-- matches, and the scan stops after %(scan)s; with one, find_runs_since.
WITH scanned AS (
    SELECT l.uuid, l.created_at
    FROM unnest(%(statuses)s::text[]) AS s(status)
    CROSS JOIN LATERAL (
        SELECT runs.id AS uuid, created_at FROM {schema}.runs
        WHERE (status, created_at, id) > (s.status, %(lo_at)s::timestamptz, %(lo_id)s::uuid)
          AND (status, created_at, id) < (s.status, %(hi_at)s::timestamptz, %(hi_id)s::uuid)
        ORDER BY status DESC, created_at DESC, runs.id DESC
        LIMIT %(scan)s
    ) AS l
    ORDER BY l.created_at DESC, l.uuid DESC
    LIMIT %(scan)s
), edge AS (
    SELECT (SELECT count(*) FROM scanned) AS scanned, o.created_at, o.uuid::text AS uuid
    FROM (SELECT created_at, uuid FROM scanned ORDER BY created_at, uuid LIMIT 1) AS o
), matched AS (
    SELECT r.id::text AS id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key,
           r.input, r.output, r.error, r.created_at, r.scheduled_at, r.started_at,
           r.finished_at, r.id AS uuid, r.version
    FROM {schema}.runs r
    WHERE r.id = ANY(ARRAY(SELECT uuid FROM scanned))
      AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
      AND (%(version)s::text IS NULL OR r.version = %(version)s::text)
      AND (%(search)s::text IS NULL
           OR strpos(lower(coalesce(r.input::text, '')), %(search)s::text) > 0
           OR strpos(lower(coalesce(r.output::text, '')), %(search)s::text) > 0)
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT %(limit)s
)
SELECT m.id, m.workflow, m.status, m.queue, m.priority, m.idempotency_key, m.input, m.output,
       m.error, m.created_at, m.scheduled_at, m.started_at, m.finished_at,
       e.scanned, e.created_at, e.uuid, m.version
FROM edge e
LEFT JOIN matched m ON true
ORDER BY m.created_at DESC, m.uuid DESC;


-- name: find_runs_since
-- find_runs with a start of the time range (lo_at): the status an equality, the positions a
-- row comparison after it, so that a backward scan stops at the range's start (bounded by row
-- comparisons starting with the status, it would read on through every older run of the
-- status when the range holds fewer than %(scan)s). Without statistics the planner may read
-- the range's runs and sort them rather than read the index in order: either way what it reads
-- is bounded by the time range.
WITH scanned AS (
    SELECT l.uuid, l.created_at
    FROM unnest(%(statuses)s::text[]) AS s(status)
    CROSS JOIN LATERAL (
        SELECT runs.id AS uuid, created_at FROM {schema}.runs
        WHERE status = s.status
          AND (created_at, id) > (%(lo_at)s::timestamptz, %(lo_id)s::uuid)
          AND (created_at, id) < (%(hi_at)s::timestamptz, %(hi_id)s::uuid)
        ORDER BY status DESC, created_at DESC, runs.id DESC
        LIMIT %(scan)s
    ) AS l
    ORDER BY l.created_at DESC, l.uuid DESC
    LIMIT %(scan)s
), edge AS (
    SELECT (SELECT count(*) FROM scanned) AS scanned, o.created_at, o.uuid::text AS uuid
    FROM (SELECT created_at, uuid FROM scanned ORDER BY created_at, uuid LIMIT 1) AS o
), matched AS (
    SELECT r.id::text AS id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key,
           r.input, r.output, r.error, r.created_at, r.scheduled_at, r.started_at,
           r.finished_at, r.id AS uuid, r.version
    FROM {schema}.runs r
    WHERE r.id = ANY(ARRAY(SELECT uuid FROM scanned))
      AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
      AND (%(version)s::text IS NULL OR r.version = %(version)s::text)
      AND (%(search)s::text IS NULL
           OR strpos(lower(coalesce(r.input::text, '')), %(search)s::text) > 0
           OR strpos(lower(coalesce(r.output::text, '')), %(search)s::text) > 0)
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT %(limit)s
)
SELECT m.id, m.workflow, m.status, m.queue, m.priority, m.idempotency_key, m.input, m.output,
       m.error, m.created_at, m.scheduled_at, m.started_at, m.finished_at,
       e.scanned, e.created_at, e.uuid, m.version
FROM edge e
LEFT JOIN matched m ON true
ORDER BY m.created_at DESC, m.uuid DESC;


-- name: find_runs_of_workflow
-- find_runs for one workflow: each status read through runs_workflow_status_created, the pair
-- (workflow, status) a range of that index as in list_runs_by_status_and_workflow.
WITH scanned AS (
    SELECT l.uuid, l.created_at
    FROM unnest(%(statuses)s::text[]) AS s(status)
    CROSS JOIN LATERAL (
        SELECT runs.id AS uuid, created_at FROM {schema}.runs
        WHERE (ARRAY[workflow, status], created_at, id)
                > (ARRAY[%(workflow)s::text, s.status], %(lo_at)s::timestamptz, %(lo_id)s::uuid)
          AND (ARRAY[workflow, status], created_at, id)
                < (ARRAY[%(workflow)s::text, s.status], %(hi_at)s::timestamptz, %(hi_id)s::uuid)
        ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
        LIMIT %(scan)s
    ) AS l
    ORDER BY l.created_at DESC, l.uuid DESC
    LIMIT %(scan)s
), edge AS (
    SELECT (SELECT count(*) FROM scanned) AS scanned, o.created_at, o.uuid::text AS uuid
    FROM (SELECT created_at, uuid FROM scanned ORDER BY created_at, uuid LIMIT 1) AS o
), matched AS (
    SELECT r.id::text AS id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key,
           r.input, r.output, r.error, r.created_at, r.scheduled_at, r.started_at,
           r.finished_at, r.id AS uuid, r.version
    FROM {schema}.runs r
    WHERE r.id = ANY(ARRAY(SELECT uuid FROM scanned))
      AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
      AND (%(version)s::text IS NULL OR r.version = %(version)s::text)
      AND (%(search)s::text IS NULL
           OR strpos(lower(coalesce(r.input::text, '')), %(search)s::text) > 0
           OR strpos(lower(coalesce(r.output::text, '')), %(search)s::text) > 0)
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT %(limit)s
)
SELECT m.id, m.workflow, m.status, m.queue, m.priority, m.idempotency_key, m.input, m.output,
       m.error, m.created_at, m.scheduled_at, m.started_at, m.finished_at,
       e.scanned, e.created_at, e.uuid, m.version
FROM edge e
LEFT JOIN matched m ON true
ORDER BY m.created_at DESC, m.uuid DESC;


-- name: find_runs_of_workflow_since
-- find_runs_since for one workflow: the pair (workflow, status) an equality.
WITH scanned AS (
    SELECT l.uuid, l.created_at
    FROM unnest(%(statuses)s::text[]) AS s(status)
    CROSS JOIN LATERAL (
        SELECT runs.id AS uuid, created_at FROM {schema}.runs
        WHERE ARRAY[workflow, status] = ARRAY[%(workflow)s::text, s.status]
          AND (created_at, id) > (%(lo_at)s::timestamptz, %(lo_id)s::uuid)
          AND (created_at, id) < (%(hi_at)s::timestamptz, %(hi_id)s::uuid)
        ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
        LIMIT %(scan)s
    ) AS l
    ORDER BY l.created_at DESC, l.uuid DESC
    LIMIT %(scan)s
), edge AS (
    SELECT (SELECT count(*) FROM scanned) AS scanned, o.created_at, o.uuid::text AS uuid
    FROM (SELECT created_at, uuid FROM scanned ORDER BY created_at, uuid LIMIT 1) AS o
), matched AS (
    SELECT r.id::text AS id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key,
           r.input, r.output, r.error, r.created_at, r.scheduled_at, r.started_at,
           r.finished_at, r.id AS uuid, r.version
    FROM {schema}.runs r
    WHERE r.id = ANY(ARRAY(SELECT uuid FROM scanned))
      AND (%(queue)s::text IS NULL OR r.queue = %(queue)s::text)
      AND (%(version)s::text IS NULL OR r.version = %(version)s::text)
      AND (%(search)s::text IS NULL
           OR strpos(lower(coalesce(r.input::text, '')), %(search)s::text) > 0
           OR strpos(lower(coalesce(r.output::text, '')), %(search)s::text) > 0)
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT %(limit)s
)
SELECT m.id, m.workflow, m.status, m.queue, m.priority, m.idempotency_key, m.input, m.output,
       m.error, m.created_at, m.scheduled_at, m.started_at, m.finished_at,
       e.scanned, e.created_at, e.uuid, m.version
FROM edge e
LEFT JOIN matched m ON true
ORDER BY m.created_at DESC, m.uuid DESC;

-- name: run_tasks
-- A run's tasks through tasks_run_step_index, in the order they were made.
SELECT id, step, task_index, status, attempt, max_attempts, rescues, instance_id, created_at,
       run_at, started_at, finished_at, errors
FROM {schema}.tasks WHERE run_id = %(id)s::uuid
ORDER BY id
LIMIT %(limit)s;

-- name: run_task_counts
-- How many tasks of a run are in each state, by step (tasks_run_step_index): a map's element
-- counts, whatever its size (run_tasks reads a page of the tasks themselves).
SELECT step, status, count(*) FROM {schema}.tasks WHERE run_id = %(id)s::uuid
GROUP BY step, status;

-- name: failure_groups
-- The %(window)s newest failed runs (runs_status_created, newest first), grouped by workflow,
-- the step that failed them and their error's type, most runs first; the latest failure of
-- each group gives its message and run. The last column is how many failed runs were read.
WITH failed AS (
    SELECT id, workflow, error, created_at, finished_at FROM {schema}.runs
    WHERE (status, created_at) >= ('failed', '-infinity')
      AND (status, created_at) <= ('failed', 'infinity')
    ORDER BY status DESC, created_at DESC, runs.id DESC
    LIMIT %(window)s
)
SELECT workflow, error ->> 'step' AS step, error ->> 'type' AS type, count(*) AS runs,
       max(finished_at) AS last_failed_at,
       (array_agg(error ->> 'message' ORDER BY created_at DESC, id DESC))[1] AS message,
       (array_agg(id::text ORDER BY created_at DESC, id DESC))[1] AS run_id,
       (SELECT count(*) FROM failed) AS scanned
FROM failed
GROUP BY 1, 2, 3
ORDER BY runs DESC, last_failed_at DESC NULLS LAST, 1, 2, 3;

-- name: failed_runs_in_group
-- The runs of one failure group among the %(window)s newest failed runs (as failure_groups).
SELECT id::text FROM (
    SELECT id, workflow, error, created_at FROM {schema}.runs
    WHERE (status, created_at) >= ('failed', '-infinity')
      AND (status, created_at) <= ('failed', 'infinity')
    ORDER BY status DESC, created_at DESC, runs.id DESC
    LIMIT %(window)s
) AS failed
WHERE workflow = %(workflow)s AND coalesce(error ->> 'step', '') = %(step)s
  AND coalesce(error ->> 'type', '') = %(type)s
ORDER BY created_at DESC, id DESC;

-- name: workflow_names
-- The workflows that have runs, by a walk over runs_workflow_status_created that jumps from
-- one (workflow, status) pair to the next (one index probe per pair, not a read of every run).
WITH RECURSIVE pairs(pair) AS (
    (SELECT ARRAY[workflow, status] FROM {schema}.runs ORDER BY ARRAY[workflow, status] LIMIT 1)
    UNION ALL
    SELECT (SELECT ARRAY[r.workflow, r.status] FROM {schema}.runs r
            WHERE ARRAY[r.workflow, r.status] > p.pair
            ORDER BY ARRAY[r.workflow, r.status] LIMIT 1)
    FROM pairs p WHERE p.pair IS NOT NULL
)
SELECT DISTINCT pair[1] FROM pairs WHERE pair IS NOT NULL ORDER BY 1;

-- name: workflow_outcomes
-- How the %(recent)s newest finished runs of a workflow ended: each final status read newest
-- first through runs_workflow_status_created (positions only), merged, counted by status.
SELECT l.status, count(*)::int FROM (
    SELECT f.status FROM (VALUES ('completed'), ('failed'), ('cancelled')) AS s(status)
    CROSS JOIN LATERAL (
        SELECT status, created_at, runs.id FROM {schema}.runs
        WHERE (ARRAY[workflow, status], created_at)
                >= (ARRAY[%(workflow)s::text, s.status], '-infinity')
          AND (ARRAY[workflow, status], created_at)
                <= (ARRAY[%(workflow)s::text, s.status], 'infinity')
        ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
        LIMIT %(recent)s
    ) AS f
    ORDER BY f.created_at DESC, f.id DESC
    LIMIT %(recent)s
) AS l
GROUP BY l.status;

-- name: workflow_step_durations
-- Each step's time, first claim to last finish, in the %(sample)s newest completed runs of a
-- workflow, their tasks found through tasks_run_step_index (run_id = ANY(ARRAY(...)): a join
-- could be planned as a scan of every task).
WITH newest AS (
    SELECT runs.id FROM {schema}.runs
    WHERE (ARRAY[workflow, status], created_at)
            >= (ARRAY[%(workflow)s::text, 'completed'], '-infinity')
      AND (ARRAY[workflow, status], created_at)
            <= (ARRAY[%(workflow)s::text, 'completed'], 'infinity')
    ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
    LIMIT %(sample)s
)
SELECT t.step, extract(epoch FROM max(t.finished_at) - min(t.started_at))::float8
FROM {schema}.tasks t
WHERE t.run_id = ANY(ARRAY(SELECT id FROM newest))
GROUP BY t.run_id, t.step;

-- name: workflow_shape
-- The steps of a workflow's newest run (its graph as stored): the newest of each status, the
-- newest of those.
SELECT l.steps FROM (VALUES ('pending'), ('running'), ('completed'), ('failed'), ('cancelled'))
    AS s(status)
CROSS JOIN LATERAL (
    SELECT steps, created_at, runs.id FROM {schema}.runs
    WHERE (ARRAY[workflow, status], created_at)
            >= (ARRAY[%(workflow)s::text, s.status], '-infinity')
      AND (ARRAY[workflow, status], created_at)
            <= (ARRAY[%(workflow)s::text, s.status], 'infinity')
    ORDER BY ARRAY[workflow, status] DESC, created_at DESC, runs.id DESC
    LIMIT 1
) AS l
ORDER BY l.created_at DESC, l.id DESC
LIMIT 1;

-- name: throughput
-- Runs created since %(since)s, at most %(cap)s of each status (the newest, through
-- runs_status_created: an equality on the status, a range on created_at, as in find_runs), by bucket of %(bucket)s seconds (its number: epoch / bucket), workflow,
-- queue and status; the last column says how many of the status were read.
SELECT floor(extract(epoch FROM l.created_at) / %(bucket)s)::bigint AS bucket, l.workflow,
       l.queue, l.status, count(*)::int, max(l.read)::int
FROM (VALUES ('pending'), ('running'), ('completed'), ('failed'), ('cancelled')) AS s(status)
CROSS JOIN LATERAL (
    SELECT workflow, queue, status, created_at, count(*) OVER () AS read
    FROM (
        SELECT workflow, queue, status, created_at FROM {schema}.runs
        WHERE status = s.status AND created_at >= %(since)s::timestamptz
        ORDER BY status DESC, created_at DESC, runs.id DESC
        LIMIT %(cap)s
    ) AS newest
) AS l
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;

-- name: queue_depths
-- Every queue with queued tasks (a walk over tasks_claim, one probe per queue) or running ones
-- (the small partial index tasks_running_instance): its due and delayed tasks counted up to
-- %(cap)s, its running tasks, and the lag of its oldest due task (the first of each priority,
-- as next_due reads them).
WITH RECURSIVE queued(queue) AS (
    (SELECT queue FROM {schema}.tasks WHERE status = 'queued' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT t.queue FROM {schema}.tasks t
            WHERE t.status = 'queued' AND t.queue > q.queue ORDER BY t.queue LIMIT 1)
    FROM queued q WHERE q.queue IS NOT NULL
), running AS (
    SELECT queue, count(*)::int AS n FROM {schema}.tasks
    WHERE status = 'running' AND instance_id IS NOT NULL
    GROUP BY queue
), queues AS (
    SELECT queue FROM queued WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM running
)
SELECT q.queue,
       (SELECT count(*)::int FROM (
            SELECT 1 FROM {schema}.tasks t
            WHERE t.status = 'queued' AND t.queue = q.queue AND t.run_at <= now()
            LIMIT %(cap)s) AS c) AS due,
       (SELECT count(*)::int FROM (
            SELECT 1 FROM {schema}.tasks t
            WHERE t.status = 'queued' AND t.queue = q.queue AND t.run_at > now()
            LIMIT %(cap)s) AS c) AS delayed,
       coalesce((SELECT n FROM running r WHERE r.queue = q.queue), 0) AS running,
       (SELECT extract(epoch FROM now() - min(first.run_at))::float8
        FROM generate_series(0, 9) AS p(priority)
        CROSS JOIN LATERAL (
            SELECT t.run_at FROM {schema}.tasks t
            WHERE t.status = 'queued' AND t.queue = q.queue AND t.priority = p.priority
            ORDER BY t.run_at
            LIMIT 1
        ) AS first
        WHERE first.run_at <= now()) AS lag
FROM queues q
ORDER BY q.queue;

-- name: instance_states
-- Registered instances by state (one row per state present): offline once their heartbeat is
-- older than %(stale_after)s seconds, as list_instances judges them. A metrics scrape's.
SELECT CASE WHEN extract(epoch FROM now() - heartbeat_at) > %(stale_after)s
            THEN 'offline' ELSE 'online' END AS state,
       count(*)::int
FROM {schema}.instances
GROUP BY 1;

-- name: run_counts_capped
-- Runs of each status, counted through runs_status_created up to %(cap)s (positions only).
SELECT s.status, (
    SELECT count(*)::int FROM (
        SELECT 1 FROM {schema}.runs
        WHERE (status, created_at) >= (s.status, '-infinity')
          AND (status, created_at) <= (s.status, 'infinity')
        LIMIT %(cap)s) AS c)
FROM (VALUES ('pending'), ('running'), ('completed'), ('failed'), ('cancelled')) AS s(status);

-- name: run_counts_estimated
-- What the statistics say (as the planner reads them): the table's rows (pg_class.reltuples,
-- as of the last VACUUM or ANALYZE; -1 if never) and the frequencies of its most common
-- statuses. Nothing is read of runs itself. %(table)s is the table's qualified name as text.
SELECT c.reltuples::float8, s.most_common_vals::text, s.most_common_freqs::float8[]
FROM pg_class c
LEFT JOIN pg_stats s
    ON s.schemaname = %(schema)s AND s.tablename = 'runs' AND s.attname = 'status'
WHERE c.oid = to_regclass(%(table)s);

-- ============================================================================================
-- Fleet-wide limits (pypgflow/limits.py, SqlEngine.admit): a claimed task with gates is
-- admitted, or sent back to the queue, in one transaction that holds its gates' locks.
-- ============================================================================================

-- name: lock_gates
-- Admissions to the same gates take turns: a transaction-scoped advisory lock per gate key,
-- taken in key order (so that two admissions never deadlock), in this schema's namespace.
SELECT pg_advisory_xact_lock(hashtextextended(%(namespace)s || k, 0))
FROM (SELECT k FROM unnest(%(keys)s::text[]) AS k ORDER BY k) AS ordered;

-- name: gate_holders
-- The holders of these gates, each said to hold it still (a task running that attempt, a run
-- unfinished) or not any more: found through gate_holders_key, then each task or run by its key.
SELECT h.key, h.task_id, h.attempt, h.run_id::text,
       CASE WHEN h.task_id IS NOT NULL
            THEN EXISTS (SELECT 1 FROM {schema}.tasks t
                         WHERE t.id = h.task_id AND t.status = 'running'
                           AND t.attempt = h.attempt)
            ELSE EXISTS (SELECT 1 FROM {schema}.runs r
                         WHERE r.id = h.run_id AND r.status IN ('pending', 'running'))
       END AS holding
FROM {schema}.gate_holders h WHERE h.key = ANY(%(keys)s::text[]);

-- name: delete_gate_holders
-- Holders that hold their gate no more (read by gate_holders), dropped a batch at a time.
DELETE FROM {schema}.gate_holders h
USING json_to_recordset(%(rows)s::json) AS d(key text, task_id bigint, attempt int, run_id uuid)
WHERE h.key = d.key AND h.run_id = d.run_id
  AND h.task_id IS NOT DISTINCT FROM d.task_id AND h.attempt IS NOT DISTINCT FROM d.attempt;

-- name: prune_rate_tokens
-- The tokens of these rate gates older than their window (and its margin).
DELETE FROM {schema}.rate_tokens t
USING json_to_recordset(%(rows)s::json) AS d(key text, window_seconds float8)
WHERE t.key = d.key AND t.taken_at <= now() - d.window_seconds * interval '1 second';

-- name: rate_tokens
-- The tokens left in these rate gates' windows: how many seconds ago each was taken.
SELECT key, extract(epoch FROM now() - taken_at)::float8 AS age FROM {schema}.rate_tokens
WHERE key = ANY(%(keys)s::text[])
ORDER BY key, taken_at;

-- name: insert_gate_holders
INSERT INTO {schema}.gate_holders (key, task_id, attempt, run_id)
SELECT d.key, d.task_id, d.attempt, d.run_id
FROM json_to_recordset(%(rows)s::json) AS d(key text, task_id bigint, attempt int, run_id uuid);

-- name: insert_rate_tokens
INSERT INTO {schema}.rate_tokens (key)
SELECT d.key FROM json_to_recordset(%(rows)s::json) AS d(key text);

-- name: defer_tasks
-- Tasks a full gate sent back: queued again, due after their delay (a concurrency gate's
-- recheck, or when a rate gate's window allows), waiting for that gate, the attempt their
-- claim counted given back. Guarded as complete_tasks is.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS d(id bigint, attempt int, delay float8, gate text)
)
UPDATE {schema}.tasks t
SET status = 'queued', attempt = t.attempt - 1,
    run_at = now() + d.delay * interval '1 second', gate_wait = d.gate
FROM d
WHERE t.id = ANY(ARRAY(SELECT id FROM d))
  AND t.id = d.id AND t.attempt = d.attempt AND t.status || '' = 'running'
RETURNING t.id;

-- name: admit_one_gate_each
-- An admission whose every task passes one concurrency gate of tasks, decided and written by
-- one statement (run after lock_gates, in its transaction): as limits.decide does, in claim
-- order (ord), a task is admitted while its gate holds fewer than its capacity, counting the
-- holders still holding (a task running that attempt) but those whose outcome is on its way
-- (finished); the rest are sent back as defer_tasks does. Holders that hold no more are
-- dropped once STALE_HOLDERS_KEPT of them (stale_kept) are there. Where a gate has room left,
-- counting every holder still holding, as many of its waiting tasks are due at once and their
-- queues notified (limits.room_left says why).
WITH r AS (
    SELECT * FROM json_to_recordset(%(rows)s::json)
        AS r(ord int, key text, capacity int, task_id bigint, attempt int, run_id uuid)
), h AS (
    SELECT h.ctid AS row_id, h.key,
           EXISTS (SELECT 1 FROM {schema}.tasks t
                   WHERE t.id = h.task_id AND t.status = 'running' AND t.attempt = h.attempt)
               AS holding,
           h.task_id = ANY(%(finished)s::bigint[]) AS finished
    FROM {schema}.gate_holders h WHERE h.key = ANY(ARRAY(SELECT DISTINCT key FROM r))
), held AS (
    SELECT key, count(*) FILTER (WHERE NOT finished) AS n, count(*) AS n_all
    FROM h WHERE holding GROUP BY key
), ranked AS (
    SELECT r.*, row_number() OVER (PARTITION BY r.key ORDER BY r.ord) <= r.capacity
               - coalesce(held.n, 0) AS admitted
    FROM r LEFT JOIN held USING (key)
), pruned AS (
    DELETE FROM {schema}.gate_holders g
    WHERE g.ctid = ANY(ARRAY(SELECT row_id FROM h WHERE NOT holding))
      AND (SELECT count(*) FROM h WHERE NOT holding) >= %(stale_kept)s
), inserted AS (
    INSERT INTO {schema}.gate_holders (key, task_id, attempt, run_id)
    SELECT key, task_id, attempt, run_id FROM ranked WHERE admitted
    RETURNING task_id
), sent_back AS (
    UPDATE {schema}.tasks t
    SET status = 'queued', attempt = t.attempt - 1,
        run_at = now() + %(recheck)s * interval '1 second', gate_wait = ranked.key
    FROM ranked
    WHERE t.id = ANY(ARRAY(SELECT task_id FROM ranked WHERE NOT admitted))
      AND t.id = ranked.task_id AND NOT ranked.admitted
      AND t.attempt = ranked.attempt AND t.status || '' = 'running'
    RETURNING t.id, ranked.key
), room AS (
    SELECT ranked.key, max(ranked.capacity) - coalesce(max(held.n_all), 0)
           - count(*) FILTER (WHERE ranked.admitted) AS n
    FROM ranked LEFT JOIN held USING (key)
    GROUP BY ranked.key
), woken AS (
    UPDATE {schema}.tasks t SET run_at = now(), gate_wait = NULL
    WHERE t.id = ANY(ARRAY(
        SELECT w.id FROM room
        CROSS JOIN LATERAL (
            SELECT q.id FROM {schema}.tasks q
            WHERE q.gate_wait = room.key AND q.status = 'queued'
            ORDER BY q.priority, q.id
            LIMIT greatest(room.n, 0)
        ) AS w
        WHERE room.n > 0))
    RETURNING t.queue
), notified AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM woken) AS q
)
SELECT true, task_id, NULL FROM inserted
UNION ALL
SELECT false, id, key FROM sent_back
UNION ALL
SELECT NULL, count(*), NULL FROM notified;

-- name: wake_gate_waiters
-- Holders of these gates ended: as many of the tasks waiting for each (best first) are due
-- now, waiting no more, and the workers of their queues notified, in the same statement.
WITH d AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS d(key text, n int)
), woken AS (
    UPDATE {schema}.tasks t SET run_at = now(), gate_wait = NULL
    WHERE t.id = ANY(ARRAY(
        SELECT w.id FROM d
        CROSS JOIN LATERAL (
            SELECT q.id FROM {schema}.tasks q
            WHERE q.gate_wait = d.key AND q.status = 'queued'
            ORDER BY q.priority, q.id
            LIMIT d.n
        ) AS w))
    RETURNING t.queue
)
SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM woken) AS q;
