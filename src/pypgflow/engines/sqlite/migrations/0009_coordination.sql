-- 0009: coordination. Signals sent to runs, for their wait steps (Workflow.wait_for,
-- App.signal); the run a run was forked from (App.fork); a child run's parent, and the child a
-- subflow task waits for (Workflow.subflow).
CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT,
    sent_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    step TEXT,
    consumed_at REAL
) STRICT;
CREATE INDEX signals_run_name ON signals (run_id, name, id);

ALTER TABLE runs ADD COLUMN forked_from TEXT;
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN parent_task_id INTEGER;
ALTER TABLE tasks ADD COLUMN child_run_id TEXT;
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
