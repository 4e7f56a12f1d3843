-- 0011: fleet-wide limits (pypgflow/limits.py). A task sent back by a full gate waits for it
-- (gate_wait); the holders of concurrency gates, and the tokens of rate gates.
ALTER TABLE {schema}.tasks ADD COLUMN gate_wait text;
CREATE INDEX tasks_gate_waiters ON {schema}.tasks (gate_wait, priority, id)
    WHERE status = 'queued' AND gate_wait IS NOT NULL;
CREATE TABLE {schema}.gate_holders (
    key text NOT NULL,
    task_id bigint,
    attempt integer,
    run_id uuid NOT NULL,
    held_since timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gate_holders_key ON {schema}.gate_holders (key);
CREATE INDEX gate_holders_run ON {schema}.gate_holders (run_id);
CREATE TABLE {schema}.rate_tokens (
    key text NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rate_tokens_key ON {schema}.rate_tokens (key, taken_at);
