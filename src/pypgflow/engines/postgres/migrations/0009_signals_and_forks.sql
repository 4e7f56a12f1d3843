-- 0009: signals sent to runs, for their wait steps (Workflow.wait_for, App.signal), and the
-- run a run was forked from (App.fork).
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
