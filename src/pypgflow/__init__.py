"""pypgflow: durable workflow orchestration for Python on PostgreSQL.

The public face: define a :class:`Workflow`, run it now with :func:`execute`, or durably with an
:class:`App` and its workers.
"""

from pypgflow.backoff import Backoff
from pypgflow.context import StepContext
from pypgflow.errors import (
    AttemptError,
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    InvalidArgument,
    NotSupported,
    PypgflowError,
    RunCancelled,
    RunNotFound,
    SchemaNotMigrated,
    SerializationError,
    StepTimeout,
    UnknownWorkflow,
    WorkflowDefinitionError,
    WorkflowFailed,
    WorkflowTimedOut,
)
from pypgflow.executor import MapInputError, execute, execute_async
from pypgflow.workflow import Step, Workflow

__version__ = "0.1.0.dev0"

__all__ = [
    "AttemptError",
    "Backoff",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailable",
    "InvalidArgument",
    "MapInputError",
    "NotSupported",
    "PypgflowError",
    "RunCancelled",
    "RunNotFound",
    "SchemaNotMigrated",
    "SerializationError",
    "Step",
    "StepContext",
    "StepTimeout",
    "UnknownWorkflow",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowFailed",
    "WorkflowTimedOut",
    "__version__",
    "execute",
    "execute_async",
]
