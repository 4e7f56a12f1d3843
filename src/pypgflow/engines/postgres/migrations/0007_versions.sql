-- 0007: workflow versions. A run records the version of its workflow it started on, and its
-- tasks carry it too, so that a claim takes only the versions the worker has the code of (runs
-- stored before have none: any worker with the workflow takes them). Each version's blueprint
-- (graph and options, no code: see pypgflow/blueprints.py) is stored, so that a process
-- without the code can start it and operators can see it.
ALTER TABLE {schema}.runs ADD COLUMN version text;
ALTER TABLE {schema}.tasks ADD COLUMN version text;
CREATE TABLE {schema}.workflow_definitions (
    workflow text NOT NULL,
    version text NOT NULL,
    definition jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, version)
);
