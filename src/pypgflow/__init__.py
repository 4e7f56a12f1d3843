"""pypgflow: durable workflow orchestration for Python on PostgreSQL.

The public face: define a :class:`Workflow`, run it now with :func:`execute`, or durably with an
:class:`App` and its workers.
"""

from pypgflow.app import App, Job, Run
from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.errors import (
    AttemptError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidArgument,
    MapInputError,
    NonRetryable,
    NotSupported,
    PoisonPill,
    PypgflowError,
    ResultTimeout,
    RetryAfter,
    RunCancelled,
    RunNotFound,
    SchemaNotMigrated,
    SerializationError,
    StepTimeout,
    UnknownWorkflow,
    WorkerLost,
    WorkflowDefinitionError,
    WorkflowFailed,
    WorkflowTimedOut,
)
from pypgflow.executor import execute, execute_async
from pypgflow.records import InstanceInfo, RunInfo, ScheduleInfo, StepInfo
from pypgflow.retention import Retention
from pypgflow.status import RunStatus, StepStatus
from pypgflow.worker import Worker
from pypgflow.workflow import Step, Workflow

__version__ = "0.1.0.dev0"

__all__ = [
    "App",
    "AttemptError",
    "Backoff",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailable",
    "IdempotencyConflict",
    "InstanceInfo",
    "InvalidArgument",
    "Job",
    "MapInputError",
    "NonRetryable",
    "NotSupported",
    "PoisonPill",
    "PypgflowError",
    "ResultTimeout",
    "Retention",
    "RetryAfter",
    "Run",
    "RunCancelled",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "ScheduleInfo",
    "SchemaNotMigrated",
    "SerializationError",
    "Step",
    "StepContext",
    "StepInfo",
    "StepStatus",
    "StepTimeout",
    "UnknownWorkflow",
    "Worker",
    "WorkerLost",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowFailed",
    "WorkflowTimedOut",
    "__version__",
    "execute",
    "execute_async",
]
