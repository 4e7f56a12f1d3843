-- 0009: coordination. Signals sent to runs, for their wait steps (Workflow.wait_for,
-- App.signal); the run a run was forked from (App.fork); a child run's parent, and the child a
-- subflow task waits for (Workflow.subflow).
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

ALTER TABLE {schema}.runs ADD COLUMN forked_from uuid;
ALTER TABLE {schema}.runs ADD COLUMN parent_run_id uuid;
ALTER TABLE {schema}.runs ADD COLUMN parent_task_id bigint;
ALTER TABLE {schema}.tasks ADD COLUMN child_run_id uuid;
CREATE INDEX runs_parent ON {schema}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
