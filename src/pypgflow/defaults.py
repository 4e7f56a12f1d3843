"""Every default pypgflow applies, in one place: the library, the worker and the CLI read them here.

A value a user can set (``App(stale_after=)``, ``Worker(heartbeat_interval=)``, ``pypgflow worker
--lease-ttl``) starts from the constant of the same name, so the CLI never retypes a library
default and the docs have one list to point at.
"""

from __future__ import annotations

from datetime import timedelta

# -- the database ------------------------------------------------------------------------------

#: the environment variable that names the database when no URL is given
DATABASE_URL_ENV = "PYPGFLOW_DATABASE_URL"
#: the embedded default: a SQLite file in the working directory
DEFAULT_URL = "sqlite:///pypgflow.db"
#: the PostgreSQL schema that holds pypgflow's tables
DEFAULT_SCHEMA = "pypgflow"
#: the environment variable holding the dashboard's token (pypgflow dashboard, create_app)
DASHBOARD_TOKEN_ENV = "PYPGFLOW_DASHBOARD_TOKEN"  # noqa: S105  the name of an environment variable, not a secret

# -- steps -------------------------------------------------------------------------------------

#: attempts per step (the first one included)
DEFAULT_MAX_ATTEMPTS = 3
#: seconds a step attempt may run
DEFAULT_TIMEOUT = 30.0
#: the backoff before the first retry, and its growth: ``base * factor ** (attempt - 1)``
DEFAULT_BACKOFF_BASE = 1.0
DEFAULT_BACKOFF_FACTOR = 10.0
DEFAULT_BACKOFF_MAX = 3600.0
DEFAULT_BACKOFF_JITTER = 0.1

# -- runs --------------------------------------------------------------------------------------

DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 0
#: runs listed at most by ``App.list_runs`` and ``pypgflow runs``
DEFAULT_LIST_LIMIT = 50
#: the largest limit of a listing (a bound the databases' integers hold, with room to spare)
MAX_LIST_LIMIT = 1_000_000_000
#: the longest wait a start's delay or a retry's may ask for, in seconds (100 years): far
#: beyond any real schedule, and well within what both databases and Python's datetime hold
MAX_DELAY = 100 * 365.25 * 24 * 3600
#: seconds between a ``result()`` waiter's own looks at its run: a safety net, since the
#: announcement of its finish wakes it at once (a notification may be lost with a connection)
RESULT_RECHECK_INTERVAL = 1.0

# -- the worker --------------------------------------------------------------------------------

#: execution slots of a queue named without a count: steps of that queue run at once. A hundred,
#: as Hatchet and Temporal workers run by default: steps that wait (on I/O, on others) overlap,
#: and claims and outcomes go in batches; sync steps get as many threads, made as needed
DEFAULT_SLOTS = 100
#: seconds between looks for work when no notification arrives
DEFAULT_POLL_INTERVAL = 1.0
#: seconds between checks whether the steps a worker runs were cancelled
DEFAULT_CANCEL_CHECK_INTERVAL = 1.0
#: seconds running steps may finish after a stop request before they are handed back
DEFAULT_SHUTDOWN_TIMEOUT = 30.0

# -- many instances ----------------------------------------------------------------------------

#: the environment variables that name an instance (the first one set wins), else host-pid-random
INSTANCE_ID_ENVS = ("PYPGFLOW_INSTANCE_ID", "INSTANCE_ID")

#: seconds between an instance's heartbeats
DEFAULT_HEARTBEAT_INTERVAL = 5.0
#: seconds without a heartbeat after which an instance is offline and its steps are rescued
DEFAULT_STALE_AFTER = 30.0
#: a step fails for good (a poison pill) once more workers than this died running it alone
DEFAULT_MAX_RESCUES = 3
#: seconds the leader lease lasts (renewed every third of it)
DEFAULT_LEASE_TTL = 15.0
#: seconds between the leader's looks for due cron ticks (it also wakes at the next tick)
DEFAULT_TICK_INTERVAL = 1.0
#: ticks missed for up to this many seconds are all started; after a longer outage, the latest
DEFAULT_CATCH_UP = 300.0

# -- retention ---------------------------------------------------------------------------------

#: completed and cancelled runs are deleted this long after they finished
KEEP_COMPLETED = timedelta(days=7)
#: failed runs are deleted this long after they failed
KEEP_FAILED = timedelta(days=30)
#: instances offline this long are removed
KEEP_OFFLINE_INSTANCES = timedelta(hours=1)
#: runs deleted per transaction, and seconds between two such batches
PRUNE_BATCH = 1000
PRUNE_PAUSE = 0.1
#: seconds between the leader's retention passes
PRUNE_INTERVAL = 600.0
