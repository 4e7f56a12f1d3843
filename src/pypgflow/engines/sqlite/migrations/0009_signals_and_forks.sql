-- 0009: signals sent to runs, for their wait steps (Workflow.wait_for, App.signal), and the
-- run a run was forked from (App.fork).
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
