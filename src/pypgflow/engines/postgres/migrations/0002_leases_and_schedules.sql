-- 0002: the leader's lease, cron schedules, and an index for pruning finished runs.

-- One row per lease (today only "leader"): held by one instance until it expires.
CREATE TABLE {schema}.leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Cron schedules, as the workers' code defines them; the leader turns their ticks into runs.
CREATE TABLE {schema}.schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    workflow text NOT NULL,
    input jsonb,
    queue text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    timezone text NOT NULL DEFAULT 'UTC',
    last_tick_at timestamptz,
    next_tick_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9)
);

CREATE INDEX runs_finished ON {schema}.runs (status, finished_at) WHERE finished_at IS NOT NULL;
