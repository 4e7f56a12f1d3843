-- Every statement the SQLite engine runs, by name. Values are always bound parameters (:name),
-- never formatted into the text. SQLite has no arrays: a batch travels as one JSON array
-- parameter, read back with json_each(:param) and `value ->> '$.field'`, so a batch is still a
-- few statements whatever its size.
--
-- Every write runs inside BEGIN IMMEDIATE: the transaction holds the database's single write
-- lock from its first statement, so what PostgreSQL needs row locks for (FOR UPDATE, SKIP
-- LOCKED) is already serialized here.
--
-- Timestamps are REAL unix epoch seconds. "now" is written {now} below and defined once, on
-- the next line; the loader (engines/sqlfile.py) puts the expression in place of each {now}
-- when it reads this file, so every statement it hands to SQLite is plain SQL, the same text
-- as if the expression were written out (and can be run as such in any SQLite shell).
-- define: now = (julianday('now') - 2440587.5) * 86400.0
-- It is the expression of the schema's DEFAULTs (schema.sql), so that a column filled by a
-- default and one set by a statement are measured alike: SQLite's clock, millisecond
-- resolution, one instant for every use within a step of a statement (SQLite fixes 'now' per
-- sqlite3_step call: a write, RETURNING and all, runs in one). Not a SQL function registered
-- on each connection: a Python function is called once per use and row, so one statement
-- would see several instants, at another clock's resolution; and a connection that had not
-- registered it (another tool's, a shell's) could not run these statements.

-- name: journal_mode_wal
PRAGMA journal_mode = WAL;

-- name: foreign_keys_on
PRAGMA foreign_keys = ON;

-- name: synchronous_full
PRAGMA synchronous = FULL;

-- name: synchronous_normal
PRAGMA synchronous = NORMAL;

-- name: busy_timeout_none
-- The writer's, once set up: it waits for other processes' writers by taking turns (turns.py).
PRAGMA busy_timeout = 0;

-- name: data_version
-- Changes whenever another connection (of any process) commits a change to the database.
PRAGMA data_version;

-- name: migrations_table_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'migrations';

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM migrations;

-- name: record_migration
INSERT INTO migrations (version, name) VALUES (:version, :name);

-- name: insert_runs
-- Inserts a batch of runs, each with its steps. Runs whose idempotency key is taken are skipped
-- (their tasks are then not inserted either); the ids actually inserted are returned.
INSERT INTO runs
    (id, workflow, status, queue, priority, idempotency_key, input, remaining_steps,
     scheduled_at, output, steps, trace_context, version, forked_from, parent_run_id,
     parent_task_id)
SELECT r.value ->> '$.id', r.value ->> '$.workflow', r.value ->> '$.status',
       r.value ->> '$.queue', r.value ->> '$.priority', r.value ->> '$.idempotency_key',
       r.value ->> '$.input', r.value ->> '$.remaining_steps',
       coalesce(r.value ->> '$.run_at',
                {now} + (r.value ->> '$.delay')),
       r.value ->> '$.output', r.value ->> '$.steps', r.value ->> '$.trace_context',
       r.value ->> '$.version', r.value ->> '$.forked_from', r.value ->> '$.parent_run_id',
       r.value ->> '$.parent_task_id'
FROM json_each(:runs) AS r
-- "WHERE true": SQLite needs a WHERE before ON CONFLICT in an INSERT ... SELECT
WHERE true
ON CONFLICT (workflow, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: insert_root_tasks
-- The first tasks of the runs just inserted, due when their run is scheduled (or their delay
-- after: a start delay, a wait step's timeout), or done already (the steps a fork keeps).
INSERT INTO tasks
    (run_id, step, task_index, workflow, queue, priority, max_attempts, input, run_at, version,
     status, output, finished_at)
SELECT t.value ->> '$.run_id', t.value ->> '$.step', t.value ->> '$.task_index',
       t.value ->> '$.workflow', t.value ->> '$.queue', t.value ->> '$.priority',
       t.value ->> '$.max_attempts', t.value ->> '$.input',
       r.scheduled_at + coalesce(t.value ->> '$.delay', 0), r.version,
       CASE WHEN t.value ->> '$.completed' THEN 'completed' ELSE 'queued' END,
       t.value ->> '$.output', CASE WHEN t.value ->> '$.completed' THEN {now} END
FROM json_each(:tasks) AS t
JOIN runs r ON r.id = t.value ->> '$.run_id';

-- name: store_definitions
-- Each workflow version's blueprint, as the latest process that knows it has it.
INSERT INTO workflow_definitions (workflow, version, definition)
SELECT d.value ->> '$.workflow', d.value ->> '$.version', d.value ->> '$.definition'
FROM json_each(:rows) AS d
WHERE true
ON CONFLICT (workflow, version) DO UPDATE SET definition = excluded.definition, stored_at = {now};

-- name: stored_definitions
-- The stored blueprints of a workflow (NULL: of every workflow), the most recently stored first.
SELECT workflow, version, definition, stored_at FROM workflow_definitions
WHERE :workflow IS NULL OR workflow = :workflow
ORDER BY stored_at DESC, workflow, version;

-- name: runs_by_idempotency_key
-- The runs holding the (workflow, idempotency key) pairs of :rows, with their inputs (a start
-- is compared with the run its key found).
SELECT r.id, r.workflow, r.idempotency_key, r.input
FROM json_each(:rows) AS k
JOIN runs r ON r.workflow = k.value ->> '$.workflow' AND r.idempotency_key = k.value ->> '$.key';

-- name: claim_tasks
-- Claims up to :limit due tasks of one queue, best first: priority, then due time, then age.
-- No SKIP LOCKED: the pick and the update are one statement under the write lock, so no other
-- connection can claim the same task. started_at keeps the first claim's time.
UPDATE tasks
SET status = 'running', attempt = attempt + 1, instance_id = :instance_id,
    started_at = coalesce(started_at, {now})
WHERE status = 'queued' AND id IN (
    SELECT id FROM tasks
    WHERE status = 'queued' AND queue = :queue
      AND run_at <= {now}
      AND workflow IN (SELECT value FROM json_each(:workflows))
      -- the versions the worker has (workflow@version); a task without one, or versions NULL:
      -- any
      AND (version IS NULL OR :versions IS NULL
           OR workflow || '@' || version IN (SELECT value FROM json_each(:versions)))
    ORDER BY priority, run_at, id
    LIMIT :limit
)
RETURNING id, run_id, step, task_index, workflow, attempt, max_attempts, input, priority, run_at,
          version, child_run_id;

-- name: claimed_task_inputs
-- What the claimed tasks need besides themselves: their run's input, the outputs of their
-- step's dependencies (a JSON object, empty for a root step; a map step's is its elements'
-- results in order, [] for none; on one task of each step only), and whether the run is still pending (its first outcome, or
-- its worker soon after the start of a step that runs long, marks it running). A step is found
-- in the steps object by a quoted path ('$."name"'): a bare label would take the dots of a
-- step's name for a path.
SELECT t.id, r.input AS run_input,
       -- once per step of a run: the elements of a map share their step's (the engine gives
       -- the others the first's), which would otherwise be read and sent for each one
       CASE WHEN row_number() OVER (PARTITION BY t.run_id, t.step ORDER BY t.id) = 1 THEN
       (SELECT json_group_object(d.value, CASE
                   WHEN r.steps -> ('$."' || d.value || '"') ->> '$.is_map' THEN
                       (SELECT json_group_array(json(e.output)) FROM (
                            SELECT e.output FROM tasks e
                            WHERE e.run_id = t.run_id AND e.step = d.value
                              AND e.task_index IS NOT NULL
                            ORDER BY e.task_index) AS e)
                   ELSE (SELECT json(p.output) FROM tasks p
                         WHERE p.run_id = t.run_id AND p.step = d.value
                           AND p.task_index IS NULL)
               END)
        FROM json_each(r.steps -> ('$."' || t.step || '"') -> '$.depends_on') AS d)
       END AS dependency_outputs,
       r.status = 'pending' AS run_pending, r.trace_context,
       -- a subflow task woken by its child's end: how the child ended
       (SELECT json_object('status', ch.status, 'output', json(ch.output),
                           'error', json(ch.error))
        FROM runs ch WHERE ch.id = t.child_run_id) AS child
FROM tasks t
JOIN runs r ON r.id = t.run_id
WHERE t.id IN (SELECT value FROM json_each(:ids));

-- name: next_due
-- Seconds until the first queued task of these queues and workflows is due (negative: due
-- already; NULL: none queued). Read as the first task of each queue and priority, in the order
-- of tasks_claim (queue, priority, run_at, id): a few index probes, where min(run_at) over every
-- queued task would read the whole backlog (or every task waiting for its retry) at each idle
-- check. Priorities are 0 to 9: a task has its run's (runs_priority_is_0_to_9).
SELECT min((SELECT t.run_at FROM tasks t
            WHERE t.status = 'queued' AND t.queue = q.value AND t.priority = p.value
              AND t.workflow IN (SELECT value FROM json_each(:workflows))
              AND (t.version IS NULL OR :versions IS NULL
                   OR t.workflow || '@' || t.version IN (SELECT value FROM json_each(:versions)))
            ORDER BY t.run_at
            LIMIT 1)) - {now} AS seconds
FROM json_each(:queues) AS q, json_each('[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]') AS p;

-- name: lock_runs
-- The runs a transaction changes, with their steps. No FOR UPDATE: BEGIN IMMEDIATE already
-- holds the write lock of the whole database, which covers these rows until the transaction
-- ends.
SELECT id, workflow, status, queue, priority, remaining_steps, steps, parent_task_id
FROM runs WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY id;

-- name: complete_tasks
-- Guarded: only the attempt that is still running may complete; late or duplicate completions
-- change nothing. The output is the step's (or the map element's).
UPDATE tasks AS t
SET status = 'completed', finished_at = {now},
    output = d.output
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.output' AS output
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING id, run_id, step, task_index;

-- name: park_tasks
-- Subflow tasks whose function returned their child's input: back to the queue, due only when
-- their child finishes (wake_parent_tasks; their delay is orchestration.NEVER), holding no slot
-- meanwhile; the attempt is given back (the claim that takes the task again counts it anew).
-- Guarded as complete_tasks is.
UPDATE tasks AS t
SET status = 'queued', run_at = {now} + d.delay, attempt = t.attempt - 1,
    child_run_id = d.child_run_id
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.child_run_id' AS child_run_id, value ->> '$.delay' AS delay
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING id, run_id;

-- name: wake_parent_tasks
-- Child runs finished: the subflow tasks waiting for them are due now (a task cancelled or
-- finished meanwhile stays as it is). Returns their queues, to notify.
UPDATE tasks SET run_at = {now}
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued'
  AND child_run_id IS NOT NULL
RETURNING queue;

-- name: active_children
-- The unfinished child runs of these runs, found through runs_parent ("+status" matches no
-- index: without statistics, runs_status_created would read every unfinished run).
SELECT id FROM runs
WHERE parent_run_id IN (SELECT value FROM json_each(:ids)) AND +status IN ('pending', 'running');

-- name: retry_tasks
UPDATE tasks AS t
SET status = 'queued', run_at = {now} + d.delay,
    errors = json_insert(t.errors, '$[#]', json(d.error)), gate_wait = NULL
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.delay' AS delay, value ->> '$.error' AS error
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING run_id;

-- name: fail_tasks
UPDATE tasks AS t
SET status = 'failed', finished_at = {now},
    errors = json_insert(t.errors, '$[#]', json(d.error))
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.error' AS error
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING id, run_id, step, task_index, attempt;

-- name: step_outputs
-- The outputs of completed plain steps (a map step's are its elements': map_outputs).
SELECT step, output FROM tasks
WHERE run_id = :run_id AND step IN (SELECT value FROM json_each(:names)) AND task_index IS NULL;

-- name: map_outputs
SELECT output FROM tasks
WHERE run_id = :run_id AND step = :step
ORDER BY task_index;

-- name: run_input
SELECT input FROM runs WHERE id = :run_id;

-- name: update_runs
-- Writes the runs as orchestration decided, their steps with them. A run marked running by its
-- first outcome started when that task was first claimed.
UPDATE runs AS r
SET status = d.status, remaining_steps = d.remaining_steps, output = d.output, error = d.error,
    steps = d.steps,
    started_at = CASE WHEN d.status <> 'pending'
                      THEN coalesce(r.started_at,
                                    (SELECT min(t.started_at) FROM tasks t
                                     WHERE t.run_id = r.id),
                                    {now})
                      ELSE r.started_at END,
    finished_at = CASE WHEN d.status IN ('completed', 'failed', 'cancelled')
                       THEN {now} END
FROM (SELECT value ->> '$.id' AS id, value ->> '$.status' AS status,
             value ->> '$.remaining_steps' AS remaining_steps, value ->> '$.output' AS output,
             value ->> '$.error' AS error, value ->> '$.steps' AS steps
      FROM json_each(:rows)) AS d
WHERE r.id = d.id;

-- name: insert_tasks
-- A new task carries its run's version. It is due in its delay (a start delay, a wait step's
-- timeout), or completed already with its output (a wait step whose signal had come).
INSERT INTO tasks
    (run_id, step, task_index, workflow, queue, priority, max_attempts, input, version, run_at,
     status, output, finished_at)
SELECT t.value ->> '$.run_id', t.value ->> '$.step', t.value ->> '$.task_index',
       t.value ->> '$.workflow', t.value ->> '$.queue', t.value ->> '$.priority',
       t.value ->> '$.max_attempts', t.value ->> '$.input',
       (SELECT r.version FROM runs r WHERE r.id = t.value ->> '$.run_id'),
       {now} + (t.value ->> '$.delay'),
       CASE WHEN t.value ->> '$.completed' THEN 'completed' ELSE 'queued' END,
       t.value ->> '$.output',
       CASE WHEN t.value ->> '$.completed' THEN {now} END
FROM json_each(:rows) AS t;

-- name: pending_signals
-- The signals of that name sent to a run and not taken by a wait step yet, oldest first.
SELECT id, data FROM signals
WHERE run_id = :run_id AND name = :name AND step IS NULL
ORDER BY id;

-- name: consume_signals
-- Pending signals taken by the wait steps that they completed.
UPDATE signals AS s SET step = d.value ->> '$.step', consumed_at = {now}
FROM json_each(:rows) AS d
WHERE s.id = d.value ->> '$.id';

-- name: insert_signal
-- A signal sent to a run (under the write lock): taken at once by the wait step it completed
-- (:step), or kept (step NULL) for the wait step that reaches it.
INSERT INTO signals (run_id, name, data, step, consumed_at)
VALUES (:run_id, :name, :data, :step, CASE WHEN :step IS NOT NULL THEN {now} END)
RETURNING id;

-- name: complete_waiting_task
-- A signal completes the task of the wait step waiting for it, while it is still queued (a
-- worker that claimed it meanwhile is timing it out).
UPDATE tasks SET status = 'completed', finished_at = {now}, output = :data
WHERE run_id = :run_id AND step = :step AND task_index IS NULL AND status = 'queued'
RETURNING id;

-- name: delete_gate_holders_of_runs
-- The holders of runs just deleted (prune_runs): a key never admitted again keeps none.
DELETE FROM gate_holders WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: prune_old_rate_tokens
-- The tokens of a rate limit older than its window (and margin), whatever their key: the keys
-- admitted no more keep none. Keys of the limit NAME are 'rate:NAME' and 'rate:NAME:...'.
DELETE FROM rate_tokens
WHERE (key = :key OR (key > :key || ':' AND key < :key || ';'))
  AND taken_at < {now} - :window_seconds
RETURNING key;

-- name: delete_signals_of_runs
-- The signals of runs just deleted (prune_runs).
DELETE FROM signals WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: cancel_tasks_of_runs
UPDATE tasks SET status = 'cancelled', finished_at = {now}
WHERE run_id IN (SELECT value FROM json_each(:ids)) AND status IN ('queued', 'running');

-- name: requeue_tasks
-- A resumed step's unfinished tasks go back to the queue with a fresh attempt budget, due in
-- their delay (a wait step's timeout; 0 for others).
UPDATE tasks AS t
SET status = 'queued', run_at = {now} + d.delay, finished_at = NULL,
    max_attempts = t.attempt + d.budget, child_run_id = NULL
FROM (SELECT value ->> '$.run_id' AS run_id, value ->> '$.step' AS step,
             value ->> '$.budget' AS budget, value ->> '$.delay' AS delay
      FROM json_each(:rows)) AS d
WHERE t.run_id = d.run_id AND t.step = d.step AND t.status <> 'completed';

-- name: get_run
SELECT id, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version, forked_from, parent_run_id
FROM runs WHERE id = :id;

-- name: run_ids_by_prefix
-- The ids that start with a prefix: the canonical ids from its first to its last
-- (ids.prefix_bounds), which sort as text as their digits do: one range of the primary key's
-- index, read in order and stopped at :limit.
SELECT id FROM runs
WHERE id BETWEEN :lo AND :hi
ORDER BY id
LIMIT :limit;

-- name: list_runs
-- Newest first; rowid breaks ties between runs created in the same millisecond. A statement per
-- filter (this one for none, then by status, by workflow, by both), each read through the index
-- in its order (runs_created, runs_status_created, runs_workflow_created,
-- runs_workflow_status_created; every index ends with the rowid) and stopping after :limit
-- rows. One statement with optional filters (":status IS NULL OR ...") could use none of them
-- for its filters: SQLite plans a statement once, for any parameter values, and it would read
-- the runs newest first until enough of them matched.
SELECT id, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version
FROM runs
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: list_runs_by_status
SELECT id, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version
FROM runs
WHERE status = :status
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: list_runs_by_workflow
SELECT id, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version
FROM runs
WHERE workflow = :workflow
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: list_runs_by_status_and_workflow
SELECT id, workflow, status, queue, priority, idempotency_key, input, output, error,
       created_at, scheduled_at, started_at, finished_at, version
FROM runs
WHERE status = :status AND workflow = :workflow
ORDER BY created_at DESC, rowid DESC
LIMIT :limit;

-- name: run_result
SELECT status, output, error FROM runs WHERE id = :id;

-- name: runs_still_going
-- Of the runs a process waits for, those not finished yet (pending or running; a run that is
-- gone is not): what waiters re-check when another connection committed something.
SELECT id FROM runs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('pending', 'running');

-- name: step_infos
-- A run's steps (from its steps column) with what their tasks say: first claim, last finish,
-- most attempts, latest instance, the output (a plain step's task's, or a map step's elements'
-- results in order, [] for none), a wait step's signal, when its queued tasks are due and since
-- when they are queued. Their errors come from step_errors (SQLite 3.40 cannot order inside an
-- aggregate). A step that never had a task finished when its run did.
SELECT s.key AS name, s.value ->> '$.position' AS position, s.value ->> '$.status' AS status,
       s.value -> '$.depends_on' AS depends_on,
       coalesce(s.value ->> '$.is_map', 0) AS is_map,
       s.value ->> '$.task_count' AS task_count,
       CASE WHEN s.value ->> '$.status' <> 'completed' THEN NULL
            WHEN s.value ->> '$.is_map' THEN
                (SELECT json_group_array(json(e.output)) FROM (
                     SELECT e.output FROM tasks e
                     WHERE e.run_id = r.id AND e.step = s.key AND e.task_index IS NOT NULL
                     ORDER BY e.task_index) AS e)
            ELSE (SELECT p.output FROM tasks p
                  WHERE p.run_id = r.id AND p.step = s.key AND p.task_index IS NULL)
       END AS output,
       (SELECT min(k.started_at) FROM tasks k
        WHERE k.run_id = r.id AND k.step = s.key) AS started_at,
       CASE WHEN s.value ->> '$.status' IN ('completed', 'failed', 'cancelled')
            THEN coalesce((SELECT max(k.finished_at) FROM tasks k
                           WHERE k.run_id = r.id AND k.step = s.key), r.finished_at)
       END AS finished_at,
       coalesce((SELECT max(k.attempt) FROM tasks k
                 WHERE k.run_id = r.id AND k.step = s.key), 0) AS attempts,
       (SELECT l.instance_id FROM tasks l
        WHERE l.run_id = r.id AND l.step = s.key
        ORDER BY l.started_at DESC NULLS LAST, l.id DESC
        LIMIT 1) AS instance_id,
       s.value ->> '$.signal' AS signal,
       (SELECT min(q.run_at) FROM tasks q
        WHERE q.run_id = r.id AND q.step = s.key AND q.status = 'queued') AS due_at,
       (SELECT min(q.created_at) FROM tasks q
        WHERE q.run_id = r.id AND q.step = s.key AND q.status = 'queued') AS queued_since,
       (SELECT json_group_array(c.child_run_id) FROM (
            SELECT c.child_run_id FROM tasks c
            WHERE c.run_id = r.id AND c.step = s.key AND c.child_run_id IS NOT NULL
            ORDER BY c.task_index) AS c) AS child_run_ids,
       (SELECT min(g.gate_wait) FROM tasks g
        WHERE g.run_id = r.id AND g.step = s.key AND g.status = 'queued') AS gate_wait
FROM runs r, json_each(r.steps) AS s
WHERE r.id = :id
ORDER BY s.value ->> '$.position';

-- name: step_errors
-- Every attempt's error of a run's tasks, in the order of PostgreSQL's step_infos.
SELECT t.step, e.value AS error
FROM tasks t, json_each(t.errors) AS e
WHERE t.run_id = :id
ORDER BY e.value ->> '$.attempt', t.task_index;

-- name: running_tasks_still_running
-- Of the tasks a worker is executing, those still running (the others were cancelled or rescued).
SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'running';

-- name: upsert_instance
INSERT INTO instances (id, hostname, pid, queues, load, versions)
VALUES (:id, :hostname, :pid, :queues, 0, :versions)
ON CONFLICT (id) DO UPDATE
SET hostname = excluded.hostname, pid = excluded.pid, queues = excluded.queues, load = 0,
    versions = excluded.versions,
    started_at = {now},
    heartbeat_at = {now};

-- name: heartbeat_instance
UPDATE instances SET heartbeat_at = {now}, load = :load
WHERE id = :id;

-- name: delete_instance
DELETE FROM instances WHERE id = :id;

-- name: list_instances
SELECT id, hostname, pid, queues, load, started_at, heartbeat_at,
       {now} - heartbeat_at AS heartbeat_age, versions
FROM instances ORDER BY started_at, id;

-- name: unknown_workflows_waiting
SELECT DISTINCT workflow FROM tasks
WHERE status = 'queued' AND queue IN (SELECT value FROM json_each(:queues))
  AND run_at <= {now}
  AND workflow NOT IN (SELECT value FROM json_each(:workflows))
LIMIT 20;

-- name: delete_task_gate_holders
-- The holders of these tasks' concurrency gates, dropped when the tasks go back to the queue
-- with their attempt given back (handed back, parked): the claim that takes one again counts
-- that attempt anew, and its holder would seem to hold the gate again.
DELETE FROM gate_holders WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: release_tasks
-- Hands tasks back on graceful shutdown: queued again, the interrupted attempt not counted,
-- in their place in the queue (run_at kept: they were due when claimed).
UPDATE tasks
SET status = 'queued', attempt = attempt - 1
WHERE id IN (SELECT value FROM json_each(:ids)) AND instance_id = :instance_id
  AND status = 'running'
RETURNING queue, id;

-- name: release_unheld_tasks
-- After a claim whose answer was lost (an error after its commit): the tasks running for this
-- instance that it does not hold (keep) were claimed by that claim and never started. Queued
-- again in their place, the attempt the claim counted given back.
UPDATE tasks SET status = 'queued', attempt = attempt - 1
WHERE status = 'running' AND instance_id = :instance_id
  AND id NOT IN (SELECT value FROM json_each(:keep))
RETURNING queue, id;

-- name: lost_tasks_exist
-- (rescue: the statements of fleet.py's rescue_tasks, hand_back_lost_tasks and
-- heartbeat_or_register)
-- Whether any task is running for an instance that is lost: silent for more than :stale_after
-- seconds, or not registered at all. A plain read: every instance asks at every heartbeat.
SELECT EXISTS (
    SELECT 1 FROM tasks t
    LEFT JOIN instances i ON i.id = t.instance_id
    WHERE t.status = 'running'
      AND (i.id IS NULL
           OR i.heartbeat_at < {now} - :stale_after)
      AND t.instance_id IS NOT :rescuer
);

-- name: lost_tasks
-- The running tasks of lost instances, with when each instance was last seen (NULL: not
-- registered) and how many tasks it lost at once (together: the poison-pill rule charges a loss
-- only to a task lost alone). Run under the write lock, like the updates that follow. The
-- rescuer's own tasks are left to it (a live worker knows what it holds). A batch takes whole
-- instances (the first whose tasks start within :limit): a count split across batches would
-- make the last task of a large loss look lost alone.
SELECT id, run_id, step, task_index, attempt, max_attempts, rescues, instance_id, queue,
       heartbeat_at, silent_for, lone_losses, together
FROM (
    SELECT *, min(n) OVER (PARTITION BY instance_id) AS first_n
    FROM (
        SELECT t.id, t.run_id, t.step, t.task_index, t.attempt, t.max_attempts, t.rescues,
               t.instance_id, t.queue, i.heartbeat_at, {now} - i.heartbeat_at AS silent_for,
               t.lone_losses, count(*) OVER (PARTITION BY t.instance_id) AS together,
               row_number() OVER (ORDER BY t.instance_id, t.id) AS n
        FROM tasks t
        LEFT JOIN instances i ON i.id = t.instance_id
        WHERE t.status = 'running'
          AND (i.id IS NULL
               OR i.heartbeat_at < {now} - :stale_after)
          AND t.instance_id IS NOT :rescuer
    ) AS numbered
) AS lost
WHERE first_n <= :limit
ORDER BY id;

-- name: own_running_tasks
-- The tasks still running for this instance but those it holds (keep): abandoned while it was
-- cut off from the database, claimed by a claim whose answer was lost, or held by an earlier
-- process with the same instance id; together: how many there are.
SELECT t.id, t.run_id, t.step, t.task_index, t.attempt, t.max_attempts, t.rescues,
       t.instance_id, t.queue, i.heartbeat_at,
       {now} - i.heartbeat_at, t.lone_losses, count(*) OVER () AS together
FROM tasks t
LEFT JOIN instances i ON i.id = t.instance_id
WHERE t.status = 'running' AND t.instance_id = :instance_id
  AND t.id NOT IN (SELECT value FROM json_each(:keep))
ORDER BY t.id;

-- name: requeue_lost_tasks
-- Guarded: only the attempt seen running for the lost instance is rescued (the write lock
-- serializes rescuers already; the guard keeps a late one from rescuing twice). With
-- :stale_after, the instance must still be silent. The attempt stays counted. run_at is kept:
-- the task was due when it was claimed, and keeps its place in the queue rather than waiting
-- behind everything started since. lone_losses + charged: see orchestration.task_lost.
UPDATE tasks AS t
SET status = 'queued', rescues = t.rescues + 1, lone_losses = t.lone_losses + d.charged,
    errors = json_insert(t.errors, '$[#]', json(d.error))
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.instance_id' AS instance_id, value ->> '$.error' AS error,
             value ->> '$.charged' AS charged
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.status = 'running' AND t.attempt = d.attempt
  AND t.instance_id = d.instance_id
  AND (:stale_after IS NULL OR NOT EXISTS (
      SELECT 1 FROM instances i
      WHERE i.id = t.instance_id
        AND i.heartbeat_at >= {now} - :stale_after))
RETURNING id, run_id, queue;

-- name: fail_lost_tasks
-- The same guard, for lost tasks that fail for good (no attempts left, or a poison pill).
UPDATE tasks AS t
SET status = 'failed', finished_at = {now},
    rescues = t.rescues + 1, lone_losses = t.lone_losses + d.charged,
    errors = json_insert(t.errors, '$[#]', json(d.error))
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.instance_id' AS instance_id, value ->> '$.error' AS error,
             value ->> '$.charged' AS charged
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.status = 'running' AND t.attempt = d.attempt
  AND t.instance_id = d.instance_id
  AND (:stale_after IS NULL OR NOT EXISTS (
      SELECT 1 FROM instances i
      WHERE i.id = t.instance_id
        AND i.heartbeat_at >= {now} - :stale_after))
RETURNING id, run_id, step, task_index, attempt;

-- name: touch_instance
-- A heartbeat that says whether the instance is still registered (no row: register again).
UPDATE instances SET heartbeat_at = {now}, load = :load
WHERE id = :id
RETURNING id;

-- name: acquire_lease
-- (leadership, schedules, retention: the statements of fleet.py's last section; instants are
-- unix epoch seconds)
-- Takes the lease for :ttl seconds: inserted if nobody ever held it, taken over if it expired,
-- extended if this holder has it. No row returned: another holder has it.
INSERT INTO leases (name, holder, expires_at)
VALUES (:name, :holder, {now} + :ttl)
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE leases.holder = excluded.holder
   OR leases.expires_at <= {now}
RETURNING holder;

-- name: release_lease
DELETE FROM leases WHERE name = :name AND holder = :holder
RETURNING holder;

-- name: lease_holder
SELECT holder, expires_at - {now} AS expires_in
FROM leases
WHERE name = :name AND expires_at > {now};

-- name: upsert_schedules
-- The schedules a worker's code defines. Their last tick is kept; the next tick is replaced
-- when the cron or time zone changed (or none was known); updated_at moves only when the
-- definition changed (a new schedule's ticks count from then).
INSERT INTO schedules (name, cron, workflow, input, queue, priority, timezone, next_tick_at)
SELECT d.value ->> '$.name', d.value ->> '$.cron', d.value ->> '$.workflow',
       d.value ->> '$.input', d.value ->> '$.queue', d.value ->> '$.priority',
       d.value ->> '$.timezone', d.value ->> '$.next_tick_at'
FROM json_each(:rows) AS d
-- "WHERE true": SQLite needs a WHERE before ON CONFLICT in an INSERT ... SELECT
WHERE true
ON CONFLICT (name) DO UPDATE
SET cron = excluded.cron, workflow = excluded.workflow, input = excluded.input,
    queue = excluded.queue, priority = excluded.priority, timezone = excluded.timezone,
    next_tick_at = CASE WHEN schedules.next_tick_at IS NULL OR schedules.cron <> excluded.cron
                             OR schedules.timezone <> excluded.timezone
                        THEN excluded.next_tick_at ELSE schedules.next_tick_at END,
    updated_at = CASE WHEN schedules.cron IS NOT excluded.cron
                           OR schedules.workflow IS NOT excluded.workflow
                           OR schedules.input IS NOT excluded.input
                           OR schedules.queue IS NOT excluded.queue
                           OR schedules.priority IS NOT excluded.priority
                           OR schedules.timezone IS NOT excluded.timezone
                      THEN {now}
                      ELSE schedules.updated_at END;

-- name: schedule_states
SELECT name, last_tick_at, next_tick_at, updated_at FROM schedules;

-- name: record_schedule_ticks
-- The last tick never moves back (no new tick keeps the old one), so a deposed leader finishing
-- a pass late cannot make the next leader start old ticks again.
UPDATE schedules AS s
SET last_tick_at = CASE WHEN d.last_tick_at IS NULL THEN s.last_tick_at
                        WHEN s.last_tick_at IS NULL THEN d.last_tick_at
                        ELSE max(s.last_tick_at, d.last_tick_at) END,
    next_tick_at = d.next_tick_at
FROM (SELECT value ->> '$.name' AS name, value ->> '$.last_tick_at' AS last_tick_at,
             value ->> '$.next_tick_at' AS next_tick_at
      FROM json_each(:rows)) AS d
WHERE s.name = d.name;

-- name: list_schedules
SELECT name, cron, workflow, queue, priority, timezone, last_tick_at, next_tick_at, input
FROM schedules ORDER BY name;

-- name: delete_schedule
-- An operator's removal of a stored schedule (one that no running instance defines any more: a
-- leader that defines it stores it again).
DELETE FROM schedules WHERE name = :name RETURNING name;

-- name: prune_runs
-- One bounded batch of retention: up to :batch runs finished long enough ago (completed and
-- cancelled after :completed_before seconds, failed after :failed_before), each kind found
-- through the runs_finished index. Their tasks go with them (delete_tasks_of_runs, in the same
-- transaction). SQLite frees a deleted row's index entries at once: each batch reads from the
-- start (the position a PostgreSQL pass keeps, :completed_after and so on, is not needed).
DELETE FROM runs WHERE id IN (
    SELECT id FROM (
        SELECT id FROM runs
        WHERE status IN ('completed', 'cancelled') AND finished_at IS NOT NULL
          AND finished_at < {now} - :completed_before
        LIMIT :batch)
    UNION ALL
    SELECT id FROM (
        SELECT id FROM runs
        WHERE status = 'failed' AND finished_at IS NOT NULL
          AND finished_at < {now} - :failed_before
        LIMIT :batch)
    LIMIT :batch
)
RETURNING id, status, created_at;

-- name: delete_tasks_of_runs
-- The tasks of runs just deleted (prune_runs), found through tasks_run_step_index.
DELETE FROM tasks WHERE run_id IN (SELECT value FROM json_each(:ids));

-- name: prune_instances
-- Instances silent for over :offline_for seconds: long gone (their tasks were rescued).
DELETE FROM instances
WHERE heartbeat_at < {now} - :offline_for
RETURNING id;

-- ============================================================================================
-- The operators' reads (engines/insight.py: the dashboard and its HTTP API), the same names
-- and columns as PostgreSQL's. Each is bounded: read through an index in its order and stopped
-- after a page, a window or a cap; nothing here writes. SQLite has no LATERAL: a read "of each
-- status" is one branch per status, each through its index (runs_status_created, or
-- runs_workflow_status_created for one workflow) in its order, stopping at its LIMIT.
-- ============================================================================================

-- name: find_runs
-- A page of runs newest first, of the statuses given (:statuses, a JSON array: a branch of a
-- status not given has LIMIT 0, so that it reads nothing), between two
-- positions (created_at, id): the cursor's, exclusive, and the time range's. Each status is
-- read through runs_status_created, newest first, positions only, the newest :scan of them
-- merged; the runs of those positions are then read and the filters no index serves (queue,
-- search in input and output) checked on them. :scan is the page's size plus one without such
-- filters, else a window (insight.SCAN_WINDOW). The last three columns: how many positions
-- were read and the oldest one; with no match at all, one row of NULL runs says so.
WITH scanned AS (
    SELECT id, created_at FROM (
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE status = 'pending'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'pending' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE status = 'running'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'running' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE status = 'completed'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'completed' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE status = 'failed'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'failed' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE status = 'cancelled'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'cancelled' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
    )
    ORDER BY created_at DESC, id DESC
    LIMIT :scan
), edge AS (
    SELECT (SELECT count(*) FROM scanned) AS scanned, o.created_at, o.id
    FROM (SELECT created_at, id FROM scanned ORDER BY created_at, id LIMIT 1) AS o
), matched AS (
    SELECT r.id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key, r.input,
           r.output, r.error, r.created_at, r.scheduled_at, r.started_at, r.finished_at,
           r.version
    FROM runs r
    WHERE r.id IN (SELECT id FROM scanned)
      AND (:queue IS NULL OR r.queue = :queue)
      AND (:version IS NULL OR r.version = :version)
      AND (:search IS NULL
           OR instr(lower(coalesce(r.input, '')), :search) > 0
           OR instr(lower(coalesce(r.output, '')), :search) > 0)
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT :limit
)
SELECT m.id, m.workflow, m.status, m.queue, m.priority, m.idempotency_key, m.input, m.output,
       m.error, m.created_at, m.scheduled_at, m.started_at, m.finished_at,
       e.scanned, e.created_at, e.id, m.version
FROM edge e
LEFT JOIN matched m ON true
ORDER BY m.created_at DESC, m.id DESC;

-- name: find_runs_of_workflow
-- find_runs for one workflow, each status through runs_workflow_status_created.
WITH scanned AS (
    SELECT id, created_at FROM (
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE workflow = :workflow AND status = 'pending'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'pending' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE workflow = :workflow AND status = 'running'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'running' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE workflow = :workflow AND status = 'completed'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'completed' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE workflow = :workflow AND status = 'failed'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'failed' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
        UNION ALL
        SELECT * FROM (
            SELECT id, created_at FROM runs
            WHERE workflow = :workflow AND status = 'cancelled'
              AND created_at >= :lo_at AND created_at <= :hi_at
              AND (created_at > :lo_at OR id > :lo_id) AND (created_at < :hi_at OR id < :hi_id)
            ORDER BY created_at DESC, id DESC
            LIMIT CASE WHEN 'cancelled' IN (SELECT value FROM json_each(:statuses)) THEN :scan ELSE 0 END)
    )
    ORDER BY created_at DESC, id DESC
    LIMIT :scan
), edge AS (
    SELECT (SELECT count(*) FROM scanned) AS scanned, o.created_at, o.id
    FROM (SELECT created_at, id FROM scanned ORDER BY created_at, id LIMIT 1) AS o
), matched AS (
    SELECT r.id, r.workflow, r.status, r.queue, r.priority, r.idempotency_key, r.input,
           r.output, r.error, r.created_at, r.scheduled_at, r.started_at, r.finished_at,
           r.version
    FROM runs r
    WHERE r.id IN (SELECT id FROM scanned)
      AND (:queue IS NULL OR r.queue = :queue)
      AND (:version IS NULL OR r.version = :version)
      AND (:search IS NULL
           OR instr(lower(coalesce(r.input, '')), :search) > 0
           OR instr(lower(coalesce(r.output, '')), :search) > 0)
    ORDER BY r.created_at DESC, r.id DESC
    LIMIT :limit
)
SELECT m.id, m.workflow, m.status, m.queue, m.priority, m.idempotency_key, m.input, m.output,
       m.error, m.created_at, m.scheduled_at, m.started_at, m.finished_at,
       e.scanned, e.created_at, e.id, m.version
FROM edge e
LEFT JOIN matched m ON true
ORDER BY m.created_at DESC, m.id DESC;

-- name: run_tasks
-- A run's tasks through tasks_run_step_index, in the order they were made.
SELECT id, step, task_index, status, attempt, max_attempts, rescues, instance_id, created_at,
       run_at, started_at, finished_at, errors
FROM tasks WHERE run_id = :id
ORDER BY id
LIMIT :limit;

-- name: run_task_counts
-- How many tasks of a run are in each state, by step (tasks_run_step_index): a map's element
-- counts, whatever its size (run_tasks reads a page of the tasks themselves).
SELECT step, status, count(*) FROM tasks WHERE run_id = :id
GROUP BY step, status;

-- name: failure_groups
-- The :window newest failed runs (runs_status_created), grouped by workflow, the step that
-- failed them and their error's type, most runs first. The latest failure of each group gives
-- its message and run: with max(), SQLite takes a group's bare columns from the row holding
-- the maximum. The last column is how many failed runs were read.
WITH failed AS (
    SELECT id, workflow, error, created_at, finished_at FROM runs
    WHERE status = 'failed'
    ORDER BY created_at DESC, id DESC
    LIMIT :window
)
SELECT workflow, error ->> '$.step' AS step, error ->> '$.type' AS type, count(*) AS runs,
       max(finished_at) AS last_failed_at, message, run_id, scanned
FROM (SELECT workflow, error, finished_at, error ->> '$.message' AS message, id AS run_id,
             created_at, (SELECT count(*) FROM failed) AS scanned
      FROM failed) AS f
GROUP BY 1, 2, 3
ORDER BY runs DESC, last_failed_at DESC, 1, 2, 3;

-- name: failed_runs_in_group
-- The runs of one failure group among the :window newest failed runs (as failure_groups).
SELECT id FROM (
    SELECT id, workflow, error, created_at FROM runs
    WHERE status = 'failed'
    ORDER BY created_at DESC, id DESC
    LIMIT :window
) AS failed
WHERE workflow = :workflow AND coalesce(error ->> '$.step', '') = :step
  AND coalesce(error ->> '$.type', '') = :type
ORDER BY created_at DESC, id DESC;

-- name: workflow_names
-- The workflows that have runs, by a walk over runs_workflow_status_created that jumps from
-- one workflow to the next (an index probe each: min() reads an index's first entry).
WITH RECURSIVE names(name) AS (
    SELECT min(workflow) FROM runs
    UNION ALL
    SELECT (SELECT min(r.workflow) FROM runs r WHERE r.workflow > n.name)
    FROM names n WHERE n.name IS NOT NULL
)
SELECT name FROM names WHERE name IS NOT NULL ORDER BY name;

-- name: workflow_outcomes
-- How the :recent newest finished runs of a workflow ended (each final status newest first
-- through runs_workflow_status_created, merged), counted by status.
SELECT status, count(*) FROM (
    SELECT status FROM (
        SELECT * FROM (
            SELECT status, created_at, id FROM runs
            WHERE workflow = :workflow AND status = 'completed'
            ORDER BY created_at DESC, id DESC
            LIMIT :recent)
        UNION ALL
        SELECT * FROM (
            SELECT status, created_at, id FROM runs
            WHERE workflow = :workflow AND status = 'failed'
            ORDER BY created_at DESC, id DESC
            LIMIT :recent)
        UNION ALL
        SELECT * FROM (
            SELECT status, created_at, id FROM runs
            WHERE workflow = :workflow AND status = 'cancelled'
            ORDER BY created_at DESC, id DESC
            LIMIT :recent)
    )
    ORDER BY created_at DESC, id DESC
    LIMIT :recent
)
GROUP BY status;

-- name: workflow_step_durations
-- Each step's time, first claim to last finish, in the :sample newest completed runs of a
-- workflow (their tasks through tasks_run_step_index).
SELECT t.step, max(t.finished_at) - min(t.started_at)
FROM (
    SELECT id FROM runs WHERE workflow = :workflow AND status = 'completed'
    ORDER BY created_at DESC, id DESC
    LIMIT :sample
) AS r
JOIN tasks t ON t.run_id = r.id
GROUP BY r.id, t.step;

-- name: workflow_shape
-- The steps of a workflow's newest run (its graph as stored): the newest of each status, the
-- newest of those.
SELECT steps FROM (
    SELECT * FROM (
        SELECT steps, created_at, id FROM runs
        WHERE workflow = :workflow AND status = 'pending'
        ORDER BY created_at DESC, id DESC
        LIMIT 1)
    UNION ALL
    SELECT * FROM (
        SELECT steps, created_at, id FROM runs
        WHERE workflow = :workflow AND status = 'running'
        ORDER BY created_at DESC, id DESC
        LIMIT 1)
    UNION ALL
    SELECT * FROM (
        SELECT steps, created_at, id FROM runs
        WHERE workflow = :workflow AND status = 'completed'
        ORDER BY created_at DESC, id DESC
        LIMIT 1)
    UNION ALL
    SELECT * FROM (
        SELECT steps, created_at, id FROM runs
        WHERE workflow = :workflow AND status = 'failed'
        ORDER BY created_at DESC, id DESC
        LIMIT 1)
    UNION ALL
    SELECT * FROM (
        SELECT steps, created_at, id FROM runs
        WHERE workflow = :workflow AND status = 'cancelled'
        ORDER BY created_at DESC, id DESC
        LIMIT 1)
)
ORDER BY created_at DESC, id DESC
LIMIT 1;

-- name: throughput
-- Runs created since :since, at most :cap of each status (the newest, through
-- runs_status_created), by bucket of :bucket seconds (its number: epoch / bucket), workflow,
-- queue and status; the last column says how many of the status were read.
SELECT CAST(created_at / :bucket AS INTEGER) AS bucket, workflow, queue, status, count(*),
       max(read)
FROM (
    SELECT *, count(*) OVER () AS read FROM (
        SELECT workflow, queue, status, created_at FROM runs
        WHERE status = 'pending' AND created_at >= :since
        ORDER BY created_at DESC
        LIMIT :cap)
    UNION ALL
    SELECT *, count(*) OVER () AS read FROM (
        SELECT workflow, queue, status, created_at FROM runs
        WHERE status = 'running' AND created_at >= :since
        ORDER BY created_at DESC
        LIMIT :cap)
    UNION ALL
    SELECT *, count(*) OVER () AS read FROM (
        SELECT workflow, queue, status, created_at FROM runs
        WHERE status = 'completed' AND created_at >= :since
        ORDER BY created_at DESC
        LIMIT :cap)
    UNION ALL
    SELECT *, count(*) OVER () AS read FROM (
        SELECT workflow, queue, status, created_at FROM runs
        WHERE status = 'failed' AND created_at >= :since
        ORDER BY created_at DESC
        LIMIT :cap)
    UNION ALL
    SELECT *, count(*) OVER () AS read FROM (
        SELECT workflow, queue, status, created_at FROM runs
        WHERE status = 'cancelled' AND created_at >= :since
        ORDER BY created_at DESC
        LIMIT :cap)
)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4;

-- name: queue_depths
-- Every queue with queued tasks (a walk over tasks_claim, one probe per queue) or running ones
-- (the partial index tasks_running_instance): its due and delayed tasks counted up to :cap,
-- its running tasks, and the lag of its oldest due task (the first of each priority).
WITH RECURSIVE queued(queue) AS (
    SELECT min(queue) FROM tasks WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT min(t.queue) FROM tasks t WHERE t.status = 'queued' AND t.queue > q.queue)
    FROM queued q WHERE q.queue IS NOT NULL
), running AS (
    SELECT queue, count(*) AS n FROM tasks
    WHERE status = 'running' AND instance_id IS NOT NULL
    GROUP BY queue
), queues AS (
    SELECT queue FROM queued WHERE queue IS NOT NULL
    UNION
    SELECT queue FROM running
), priorities(priority) AS (
    VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)
)
SELECT q.queue,
       (SELECT count(*) FROM (
            SELECT 1 FROM tasks t
            WHERE t.status = 'queued' AND t.queue = q.queue AND t.run_at <= {now}
            LIMIT :cap)) AS due,
       (SELECT count(*) FROM (
            SELECT 1 FROM tasks t
            WHERE t.status = 'queued' AND t.queue = q.queue AND t.run_at > {now}
            LIMIT :cap)) AS delayed,
       coalesce((SELECT n FROM running r WHERE r.queue = q.queue), 0) AS running,
       (SELECT {now} - min(first) FROM (
            SELECT (SELECT t.run_at FROM tasks t
                    WHERE t.status = 'queued' AND t.queue = q.queue
                      AND t.priority = p.priority
                    ORDER BY t.run_at
                    LIMIT 1) AS first
            FROM priorities p)
        WHERE first <= {now}) AS lag
FROM queues q
ORDER BY q.queue;

-- name: instance_states
-- Registered instances by state (one row per state present): offline once their heartbeat is
-- older than :stale_after seconds, as list_instances judges them. A metrics scrape's.
SELECT CASE WHEN {now} - heartbeat_at > :stale_after THEN 'offline' ELSE 'online' END AS state,
       count(*)
FROM instances
GROUP BY 1;

-- name: run_counts_capped
-- Runs of each status, counted through runs_status_created up to :cap.
SELECT 'pending', (SELECT count(*) FROM (
    SELECT 1 FROM runs WHERE status = 'pending' LIMIT :cap))
UNION ALL
SELECT 'running', (SELECT count(*) FROM (
    SELECT 1 FROM runs WHERE status = 'running' LIMIT :cap))
UNION ALL
SELECT 'completed', (SELECT count(*) FROM (
    SELECT 1 FROM runs WHERE status = 'completed' LIMIT :cap))
UNION ALL
SELECT 'failed', (SELECT count(*) FROM (
    SELECT 1 FROM runs WHERE status = 'failed' LIMIT :cap))
UNION ALL
SELECT 'cancelled', (SELECT count(*) FROM (
    SELECT 1 FROM runs WHERE status = 'cancelled' LIMIT :cap));

-- ============================================================================================
-- Fleet-wide limits (pypgflow/limits.py, SqlEngine.admit): a claimed task with gates is
-- admitted, or sent back to the queue, in one write transaction (which serializes admissions).
-- ============================================================================================

-- name: gate_holders
-- The holders of these gates, each said to hold it still (a task running that attempt, a run
-- unfinished) or not any more.
SELECT h.key, h.task_id, h.attempt, h.run_id,
       CASE WHEN h.task_id IS NOT NULL
            THEN EXISTS (SELECT 1 FROM tasks t
                         WHERE t.id = h.task_id AND t.status = 'running'
                           AND t.attempt = h.attempt)
            ELSE EXISTS (SELECT 1 FROM runs r
                         WHERE r.id = h.run_id AND r.status IN ('pending', 'running'))
       END AS holding
FROM gate_holders h WHERE h.key IN (SELECT value FROM json_each(:keys));

-- name: delete_gate_holders
-- Holders that hold their gate no more (read by gate_holders), dropped a batch at a time.
DELETE FROM gate_holders
WHERE rowid IN (
    SELECT h.rowid FROM gate_holders h
    JOIN json_each(:rows) AS d
      ON h.key = d.value ->> '$.key' AND h.run_id = d.value ->> '$.run_id'
     AND h.task_id IS d.value ->> '$.task_id' AND h.attempt IS d.value ->> '$.attempt');

-- name: prune_rate_tokens
-- The tokens of these rate gates older than their window (and its margin).
DELETE FROM rate_tokens
WHERE rowid IN (
    SELECT t.rowid FROM rate_tokens t
    JOIN json_each(:rows) AS d ON t.key = d.value ->> '$.key'
    WHERE t.taken_at <= {now} - (d.value ->> '$.window_seconds'));

-- name: rate_tokens
-- The tokens left in these rate gates' windows: how many seconds ago each was taken.
SELECT key, {now} - taken_at AS age FROM rate_tokens
WHERE key IN (SELECT value FROM json_each(:keys))
ORDER BY key, taken_at;

-- name: insert_gate_holders
INSERT INTO gate_holders (key, task_id, attempt, run_id)
SELECT d.value ->> '$.key', d.value ->> '$.task_id', d.value ->> '$.attempt',
       d.value ->> '$.run_id'
FROM json_each(:rows) AS d;

-- name: insert_rate_tokens
INSERT INTO rate_tokens (key) SELECT d.value ->> '$.key' FROM json_each(:rows) AS d;

-- name: defer_tasks
-- Tasks a full gate sent back: queued again, due after their delay, waiting for that gate,
-- the attempt their claim counted given back. Guarded as complete_tasks is.
UPDATE tasks AS t
SET status = 'queued', attempt = t.attempt - 1, run_at = {now} + d.delay, gate_wait = d.gate
FROM (SELECT value ->> '$.id' AS id, value ->> '$.attempt' AS attempt,
             value ->> '$.delay' AS delay, value ->> '$.gate' AS gate
      FROM json_each(:rows)) AS d
WHERE t.id = d.id AND t.attempt = d.attempt AND t.status = 'running'
RETURNING id;

-- name: wake_gate_waiters
-- Holders of a gate ended: as many of the tasks waiting for it (best first) are due now.
-- Returns their queues, to notify.
UPDATE tasks SET run_at = {now}, gate_wait = NULL
WHERE id IN (
    SELECT q.id FROM tasks q
    WHERE q.gate_wait = :key AND q.status = 'queued'
    ORDER BY q.priority, q.id
    LIMIT :n)
RETURNING queue;
