-- 0011: fleet-wide limits (pypgflow/limits.py). A task sent back by a full gate waits for it
-- (gate_wait); the holders of concurrency gates, and the tokens of rate gates.
ALTER TABLE tasks ADD COLUMN gate_wait TEXT;
CREATE INDEX tasks_gate_waiters ON tasks (gate_wait, priority, id)
    WHERE status = 'queued' AND gate_wait IS NOT NULL;
CREATE TABLE gate_holders (
    key TEXT NOT NULL,
    task_id INTEGER,
    attempt INTEGER,
    run_id TEXT NOT NULL,
    held_since REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;
CREATE INDEX gate_holders_key ON gate_holders (key);
CREATE INDEX gate_holders_run ON gate_holders (run_id);
CREATE TABLE rate_tokens (
    key TEXT NOT NULL,
    taken_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
) STRICT;
CREATE INDEX rate_tokens_key ON rate_tokens (key, taken_at);
