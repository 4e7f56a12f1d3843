-- 0004: a run's steps move into its own row (runs.steps, one JSON object), and a plain step's
-- output onto its task, like a map element's: a run is one row to lock, read and write instead
-- of one per step. Tasks lose their foreign key (retention deletes a run's tasks with it), and
-- runs the indexes no listing needs (each costs an entry at every change of a run's status).
-- The step objects hold what the steps table held, without its null and false values (see
-- engines/sqlbase.py, "steps").

ALTER TABLE {schema}.runs ADD COLUMN steps jsonb;
UPDATE {schema}.runs r
SET steps = coalesce(
    (SELECT jsonb_object_agg(s.name, jsonb_strip_nulls(jsonb_build_object(
                'position', s.position,
                'status', s.status,
                'depends_on', s.depends_on,
                'remaining_deps', s.remaining_deps,
                'max_attempts', s.max_attempts,
                'is_map', CASE WHEN s.is_map THEN true END,
                'map_over', s.map_over,
                'remaining_tasks', s.remaining_tasks,
                'task_count', s.task_count)))
     FROM {schema}.steps s WHERE s.run_id = r.id),
    '{{}}'::jsonb);
ALTER TABLE {schema}.runs ALTER COLUMN steps SET NOT NULL;

UPDATE {schema}.tasks t
SET output = s.output
FROM {schema}.steps s
WHERE s.run_id = t.run_id AND s.name = t.step AND t.task_index IS NULL
  AND s.output IS NOT NULL AND t.output IS NULL;

ALTER TABLE {schema}.tasks DROP CONSTRAINT tasks_run_id_step_fkey;
DROP TABLE {schema}.steps;

DROP INDEX {schema}.runs_created;
DROP INDEX {schema}.runs_workflow_created;
DROP INDEX {schema}.runs_finished;
