-- 0002: the leader's lease, cron schedules, and an index for pruning finished runs.

-- One row per lease (today only "leader"): held by one instance until it expires.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
) STRICT;

-- Cron schedules, as the workers' code defines them; the leader turns their ticks into runs.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    workflow TEXT NOT NULL,
    input TEXT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    last_tick_at REAL,
    next_tick_at REAL,
    updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    CONSTRAINT schedules_priority_is_0_to_9 CHECK (priority BETWEEN 0 AND 9)
) STRICT;

CREATE INDEX runs_finished ON runs (status, finished_at) WHERE finished_at IS NOT NULL;
