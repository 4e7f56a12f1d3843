-- 0007: workflow versions. A run records the version of its workflow it started on, and its
-- tasks carry it too, so that a claim takes only the versions the worker has the code of (runs
-- stored before have none: any worker with the workflow takes them). Each version's blueprint
-- (graph and options, no code: see pypgflow/blueprints.py) is stored, so that a process
-- without the code can start it and operators can see it. SQLite adds the columns after the
-- last ones, as schema.sql has them.
ALTER TABLE runs ADD COLUMN version TEXT;
ALTER TABLE tasks ADD COLUMN version TEXT;
CREATE TABLE workflow_definitions (
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    definition TEXT NOT NULL,
    stored_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (workflow, version)
) STRICT;
