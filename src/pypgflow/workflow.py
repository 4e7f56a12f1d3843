"""Workflows and their steps: how a workflow is written, validated and bound to its functions.

A :class:`Workflow` is a directed acyclic graph of :class:`Step` s. It knows nothing about how it is
executed: the in-process executor and the durable engines both read the same definition.

Linear chains are the default: a step declared without ``depends_on`` depends on the step declared
just before it, and receives that step's output. DAGs name their dependencies; parameters are bound
by name (``input``, ``ctx``, or a dependency's name).

Why one module: declaring a step validates and binds it against the steps declared before it, so
declaration, graph validation and parameter binding are one piece of work, done at definition time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import re
import typing
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast, overload

from pypgflow.backoff import DEFAULT_BACKOFF, Backoff
from pypgflow.defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT
from pypgflow.errors import (
    InvalidArgument,
    SerializationError,
    SignalTimeout,
    WorkflowDefinitionError,
)
from pypgflow.values import Decoder, decoder_for

F = TypeVar("F", bound=Callable[..., Any])
D = TypeVar("D")

#: the most values a workflow keeps derived from its steps (see Workflow.derived)
DERIVED_KEPT = 256
Isolation = Literal["thread", "process"]
StepRef = str | Callable[..., Any]

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,199}$")
_RESERVED_STEP_NAMES = frozenset({"input", "ctx"})
_MISSING: Any = object()


class ArgSource(Enum):
    """Where one parameter of a step function gets its value."""

    INPUT = "input"  # the workflow input
    CONTEXT = "ctx"  # the StepContext
    DEPENDENCY = "dependency"  # the output of the named dependency
    ITEM = "item"  # the element of a map step


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    source: ArgSource
    positional_only: bool
    dependency: str | None = None
    #: makes the annotated type of the parameter from its JSON form (None: given as it is)
    decode: Decoder | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Step:
    """One step of a workflow: a function, what it depends on, and how it is retried."""

    name: str
    fn: Callable[..., Any]
    depends_on: tuple[str, ...]
    params: tuple[Param, ...]
    is_async: bool
    max_attempts: int | None = None
    timeout: float | None = None
    backoff: Backoff | None = None
    #: the exception types retried (None: every one), and those never retried
    retry_on: tuple[type[BaseException], ...] | None = None
    give_up_on: tuple[type[BaseException], ...] | None = None
    isolation: Isolation = "thread"
    is_map: bool = False
    #: for a map step, the step whose list output it maps over; None maps over the workflow input
    map_over: str | None = None
    #: the condition: called before the step, bound as a step is (``when_params``); when it
    #: returns something false the step is skipped
    when: Callable[..., Any] | None = None
    when_params: tuple[Param, ...] = ()
    #: seconds between the step's dependencies completing and its becoming due (durable: the
    #: task waits in the database, holding no slot)
    start_delay: float = 0.0
    #: a wait step (:meth:`Workflow.wait_for`): the signal it waits for, and for how long at most
    #: (None: forever); it completes with the signal's data and calls no function of its own
    signal: str | None = None
    signal_timeout: float | None = None
    #: a subflow step (:meth:`Workflow.subflow`, or a map with ``subflow=``): the workflow its
    #: function's result starts as a child run; the step's output is the child's result
    child: Workflow | None = None
    #: at most this many executions of the step at once across every worker (None: no limit),
    #: per value of ``concurrency_key(input)`` when it is given
    concurrency: int | None = None
    concurrency_key: Callable[[Any], Any] | None = None
    #: the App's rate limit each execution takes a token of (``app.rate_limit``), per value of
    #: ``rate_limit_key(input)`` when it is given
    rate_limit: str | None = None
    rate_limit_key: Callable[[Any], Any] | None = None

    async def should_run(self, *, input: Any, outputs: Mapping[str, Any], ctx: Any) -> bool:
        """Whether the step runs: what its ``when`` condition (awaited if it is async) says of
        its bound arguments; a step without one always runs. The condition is called where the
        step would be, on the event loop: it should be quick."""
        if self.when is None:
            return True
        args, kwargs = _arguments(self, self.when_params, input, outputs, ctx, _MISSING)
        verdict = self.when(*args, **kwargs)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)

    def bind(
        self, *, input: Any, outputs: Mapping[str, Any], ctx: Any, item: Any = _MISSING
    ) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments to call the step function with."""
        return _arguments(self, self.params, input, outputs, ctx, item)


def _arguments(
    step: Step,
    params: tuple[Param, ...],
    input: Any,
    outputs: Mapping[str, Any],
    ctx: Any,
    item: Any,
) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in params:
        if param.source is ArgSource.INPUT:
            value = input
        elif param.source is ArgSource.CONTEXT:
            value = ctx
        elif param.source is ArgSource.ITEM:
            value = item
        else:
            assert param.dependency is not None  # noqa: S101  a type narrowing
            value = outputs[param.dependency]
        if param.decode is not None:
            try:
                value = param.decode(value)
            except ValueError as exc:
                raise SerializationError(
                    f"step {step.name!r}, parameter {param.name!r}: {exc}"
                ) from exc
        if param.positional_only:
            args.append(value)
        else:
            kwargs[param.name] = value
    return args, kwargs


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise WorkflowDefinitionError(
            f"invalid {kind} name {name!r}: use 1 to 200 letters, digits, '_', '.', ':' or '-'"
        )
    return name


@dataclass(frozen=True)
class _Limits:
    """A step's (or a workflow's) limit options, as given."""

    concurrency: int | None = None
    concurrency_key: Callable[[Any], Any] | None = None
    rate_limit: str | None = None
    rate_limit_key: Callable[[Any], Any] | None = None


def _check_limits(where: str, limits: _Limits) -> _Limits:
    concurrency = limits.concurrency
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise WorkflowDefinitionError(
            f"{where}: concurrency must be an integer >= 1, got {concurrency!r}"
        )
    for option, fn in (
        ("concurrency_key", limits.concurrency_key),
        ("rate_limit_key", limits.rate_limit_key),
    ):
        if fn is not None and not callable(fn):
            raise WorkflowDefinitionError(f"{where}: {option} takes a function, got {fn!r}")
    if limits.concurrency_key is not None and concurrency is None:
        raise WorkflowDefinitionError(f"{where}: concurrency_key needs concurrency=")
    if limits.rate_limit is not None:
        _check_name("rate limit", limits.rate_limit)
    if limits.rate_limit_key is not None and limits.rate_limit is None:
        raise WorkflowDefinitionError(f"{where}: rate_limit_key needs rate_limit=")
    return limits


def check_signal_name(name: Any) -> str:
    """``name`` if it can name a signal (as a step is named), else InvalidArgument."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(
            f"invalid signal name {name!r}: use 1 to 200 letters, digits, '_', '.', ':' or '-'"
        )
    return name


def _check_options(
    where: str, max_attempts: int | None, timeout: float | None, backoff: Backoff | None
) -> None:
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise WorkflowDefinitionError(f"{where}: max_attempts must be an integer >= 1")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or math.isnan(timeout)
        or timeout <= 0
    ):
        raise WorkflowDefinitionError(f"{where}: timeout must be a number of seconds > 0")
    if backoff is not None and not isinstance(backoff, Backoff):
        raise WorkflowDefinitionError(f"{where}: backoff must be a pypgflow.Backoff")


#: the longest delay or timeout a step takes (a hundred years: longer is a mistake)
MAX_WAIT_SECONDS = 100 * 365 * 86400.0


def _seconds(where: str, option: str, value: Any, *, positive: bool = False) -> float:
    """A delay or timeout given as seconds or a timedelta, as seconds; WorkflowDefinitionError
    unless it is a finite number >= 0 (> 0 if ``positive``) of at most a hundred years."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
        or (positive and seconds == 0)
        or seconds > MAX_WAIT_SECONDS
    ):
        bound = "> 0" if positive else ">= 0"
        raise WorkflowDefinitionError(
            f"{where}: {option} must be a number of seconds {bound} (at most 100 years) or a "
            f"timedelta, got {value!r}"
        )
    return float(seconds)


def _nested_names(flow: Workflow) -> set[str]:
    """The names of the workflows ``flow`` runs as children, theirs, and so on."""
    names: set[str] = set()
    pending = [flow]
    while pending:
        for step in pending.pop()._steps.values():
            if step.child is not None and step.child.name not in names:
                names.add(step.child.name)
                pending.append(step.child)
    return names


def children_of(flow: Workflow) -> list[Workflow]:
    """The workflows ``flow`` runs as children, and theirs, each once: what a worker of
    ``flow`` must be able to run too."""
    found: dict[str, Workflow] = {}
    pending = [flow]
    while pending:
        for step in pending.pop()._steps.values():
            child = step.child
            if child is not None and f"{child.name}@{child.version}" not in found:
                found[f"{child.name}@{child.version}"] = child
                pending.append(child)
    return list(found.values())


def _duration(seconds: float | None) -> str:
    return "without a limit" if seconds is None else f"{seconds:g} s"


#: what ``retry_on`` and ``give_up_on`` take: an exception class, or a tuple of them
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]


def exception_types(
    where: str, option: str, value: ExceptionTypes | None
) -> tuple[type[BaseException], ...] | None:
    """``value`` as a tuple of exception classes (None stays None), or WorkflowDefinitionError."""
    if value is None:
        return None
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise WorkflowDefinitionError(
            f"{where}: {option} takes an exception class or a tuple of them, got {value!r}"
        )
    return types


class Workflow:
    """A named graph of steps. The name is the workflow's stable identifier; ``version`` names
    this definition of it (by default, a fingerprint of its shape: see :attr:`version`).

    ``max_attempts``, ``timeout``, ``backoff``, ``retry_on`` and ``give_up_on`` set this
    workflow's defaults; a step's own setting wins over them. ``concurrency`` (with an optional
    ``concurrency_key``, a function of the run's input) limits whole runs: at most that many
    runs of this workflow (per key) at once across every worker, a run counting from its first
    step's start until it finishes, gaps between steps included.
    """

    def __init__(
        self,
        name: str,
        *,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        version: str | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
    ) -> None:
        self.name = _check_name("workflow", name)
        where = f"workflow {name!r}"
        run_limits = _check_limits(where, _Limits(concurrency, concurrency_key))
        #: at most this many runs unfinished at once (counted from their first step's start),
        #: per value of ``concurrency_key(input)`` when it is given
        self.concurrency = run_limits.concurrency
        self.concurrency_key = run_limits.concurrency_key
        if version is not None and not (isinstance(version, str) and _NAME_RE.match(version)):
            raise WorkflowDefinitionError(
                f"{where}: version must be 1 to 200 letters, digits and _ . : - (not starting "
                f"with one of . : -), got {version!r}"
            )
        #: the version given, or None: :attr:`version` is then the shape's fingerprint
        self.declared_version = version
        _check_options(where, max_attempts, timeout, backoff)
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.backoff = backoff
        self.retry_on = exception_types(where, "retry_on", retry_on)
        self.give_up_on = exception_types(where, "give_up_on", give_up_on)
        self._steps: dict[str, Step] = {}
        self._order: tuple[str, ...] | None = None
        self._options: dict[tuple[Any, ...], StepOptions] = {}
        self._fingerprint: str | None = None
        #: what other modules derive from the steps (see derived), until a step is added
        self._derived: dict[Hashable, Any] = {}

    # -- definition ---------------------------------------------------------------------------

    @overload
    def step(self, fn: F) -> F: ...

    @overload
    def step(
        self,
        *,
        name: str | None = None,
        depends_on: Sequence[StepRef] | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        isolation: Isolation = "thread",
        when: Callable[..., Any] | None = None,
        start_delay: float | timedelta | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        rate_limit: str | None = None,
        rate_limit_key: Callable[[Any], Any] | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        depends_on: Sequence[StepRef] | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        isolation: Isolation = "thread",
        when: Callable[..., Any] | None = None,
        start_delay: float | timedelta | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        rate_limit: str | None = None,
        rate_limit_key: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Declare a step. Used bare (``@flow.step``) or with options; returns the function unchanged.

        Without ``depends_on`` the step depends on the step declared just before it (a linear
        chain); ``depends_on=[]`` makes it a root that receives the workflow input.

        ``when``: a condition, bound by parameter name as a step is (a dependency's output,
        ``input``, ``ctx``) and called once its dependencies are done; when it returns something
        false the step is ``skipped`` without running, and its dependents receive None for it.

        ``start_delay`` (seconds or a timedelta): the step becomes due that long after its
        dependencies complete (after the run starts, for a root). The wait is durable: the step
        waits in the database, survives restarts and holds no worker slot meanwhile.

        ``concurrency``: at most that many executions of this step at once, across every worker
        (with ``concurrency_key``, a function of the run's input, at most that many per key:
        ``concurrency=1, concurrency_key=lambda input: input["customer"]`` runs one at a time
        per customer). ``rate_limit``: the name of a rate limit declared on the App
        (``app.rate_limit("stripe", 100, per=60)``), of which each execution takes a token
        (per ``rate_limit_key(input)`` when given). A step over a limit waits in the database,
        not in a worker slot.
        """

        def decorate(func: F) -> F:
            self._add(
                func,
                name=name,
                depends_on=depends_on,
                max_attempts=max_attempts,
                timeout=timeout,
                backoff=backoff,
                retry_on=retry_on,
                give_up_on=give_up_on,
                isolation=isolation,
                is_map=False,
                map_over=None,
                when=when,
                start_delay=start_delay,
                limits=_Limits(concurrency, concurrency_key, rate_limit, rate_limit_key),
            )
            return func

        return decorate(fn) if fn is not None else decorate

    @overload
    def map(
        self,
        fn: F,
        *,
        over: StepRef | None,
        name: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        isolation: Isolation = "thread",
        subflow: Workflow | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        rate_limit: str | None = None,
        rate_limit_key: Callable[[Any], Any] | None = None,
    ) -> F: ...

    @overload
    def map(
        self,
        fn: None = None,
        *,
        over: StepRef | None,
        name: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        isolation: Isolation = "thread",
        subflow: Workflow | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        rate_limit: str | None = None,
        rate_limit_key: Callable[[Any], Any] | None = None,
    ) -> Callable[[F], F]: ...

    def map(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        over: StepRef | None,
        name: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        isolation: Isolation = "thread",
        subflow: Workflow | None = None,
        concurrency: int | None = None,
        concurrency_key: Callable[[Any], Any] | None = None,
        rate_limit: str | None = None,
        rate_limit_key: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Declare a map step: the function runs once per element of the list that step ``over``
        returned (or of the workflow input with ``over=None``); the step's output is the list of
        results, in order. Retries and timeouts apply to each element on its own.

        With ``subflow=child``, the function returns, for its element, the input of a run of
        the workflow ``child``: one child run per element, and the step's output is the list of
        their results (see :meth:`subflow`). ``concurrency`` and ``rate_limit`` (see
        :meth:`step`) count each element's execution.
        """

        def decorate(func: F) -> F:
            self._add(
                func,
                name=name,
                depends_on=[] if over is None else [over],
                max_attempts=max_attempts,
                timeout=timeout,
                backoff=backoff,
                retry_on=retry_on,
                give_up_on=give_up_on,
                isolation=isolation,
                is_map=True,
                map_over=None if over is None else self._ref_name(over, "map over"),
                child=subflow,
                limits=_Limits(concurrency, concurrency_key, rate_limit, rate_limit_key),
            )
            return func

        return decorate(fn) if fn is not None else decorate

    def subflow(
        self,
        child: Workflow,
        *,
        name: str | None = None,
        depends_on: Sequence[StepRef] | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
        retry_on: ExceptionTypes | None = None,
        give_up_on: ExceptionTypes | None = None,
        when: Callable[..., Any] | None = None,
    ) -> Callable[[F], F]:
        """Declare a step that runs the workflow ``child`` as a child run. The decorated function
        is bound and called as a step is, and returns the child's input; the step then waits,
        holding no worker slot, and completes with the child run's result, or fails for good
        with :class:`~pypgflow.errors.ChildRunFailed` if the child failed or was cancelled. The
        child is a run of its own (``RunInfo.parent_run_id`` names the parent, the step's
        ``StepInfo.child_run_ids`` the child); cancelling or failing the parent cancels its
        unfinished children. Options apply to the function's attempts, as for a step."""
        if not isinstance(child, Workflow):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: subflow() takes the child Workflow, got {child!r}"
            )

        def decorate(func: F) -> F:
            self._add(
                func,
                name=name,
                depends_on=depends_on,
                max_attempts=max_attempts,
                timeout=timeout,
                backoff=backoff,
                retry_on=retry_on,
                give_up_on=give_up_on,
                isolation="thread",
                is_map=False,
                map_over=None,
                when=when,
                child=child,
            )
            return func

        return decorate

    def wait_for(
        self,
        name: str,
        *,
        signal: str,
        depends_on: Sequence[StepRef] | None = None,
        timeout: float | timedelta | None = None,
    ) -> str:
        """Declare a wait step named ``name``: once its dependencies are done it waits, in the
        database and holding no worker slot, for the signal ``signal`` sent to its run
        (``App.signal(run_id, signal, data)``), and completes with the signal's data. A signal
        sent before the step is reached is kept until it is. After ``timeout`` (seconds or a
        timedelta; None: no limit) without one, the step fails with
        :class:`~pypgflow.errors.SignalTimeout`, which is not retried. Returns ``name``, to name
        it in ``depends_on``."""
        where = f"workflow {self.name!r}, step {name!r}"
        signal = _check_name("signal", signal)
        seconds = None if timeout is None else _seconds(where, "timeout", timeout, positive=True)

        def waits() -> None:
            raise SignalTimeout(
                f"step {name!r} waited {_duration(seconds)} for signal {signal!r}: none came"
            )

        waits.__name__ = waits.__qualname__ = f"wait_for_{signal}"
        self._add(
            waits,
            name=name,
            depends_on=depends_on,
            max_attempts=1,
            timeout=None,
            backoff=None,
            retry_on=None,
            give_up_on=None,
            isolation="thread",
            is_map=False,
            map_over=None,
            signal=signal,
            signal_timeout=seconds,
        )
        return name

    @classmethod
    def from_steps(
        cls,
        name: str,
        steps: Iterable[tuple[str, Callable[..., Any]] | Callable[..., Any]],
        *,
        max_attempts: int | None = None,
        timeout: float | None = None,
        backoff: Backoff | None = None,
    ) -> Workflow:
        """A linear workflow from a list of ``(name, function)`` pairs (or bare functions), in order:
        each step's output is the next step's input.
        """
        flow = cls(name, max_attempts=max_attempts, timeout=timeout, backoff=backoff)
        for entry in steps:
            if isinstance(entry, tuple):
                if len(entry) != 2 or not isinstance(entry[0], str) or not callable(entry[1]):
                    raise WorkflowDefinitionError(
                        f"workflow {name!r}: each step must be a (name, function) pair, "
                        f"got {entry!r}"
                    )
                flow.step(name=entry[0])(entry[1])
            elif callable(entry):
                flow.step(entry)
            else:
                raise WorkflowDefinitionError(
                    f"workflow {name!r}: each step must be a (name, function) pair, got {entry!r}"
                )
        return flow.validate()

    def _ref_name(self, ref: StepRef, what: str) -> str:
        if isinstance(ref, str):
            return ref
        if callable(ref):
            for step in self._steps.values():
                if step.fn is ref:
                    return step.name
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: {what} refers to {getattr(ref, '__qualname__', ref)!r}, "
                "which is not a step of this workflow (declare it first, or name it by string)"
            )
        raise WorkflowDefinitionError(
            f"workflow {self.name!r}: {what} takes step names or step functions, got {ref!r}"
        )

    def _add(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        depends_on: Sequence[StepRef] | None,
        max_attempts: int | None,
        timeout: float | None,
        backoff: Backoff | None,
        retry_on: ExceptionTypes | None,
        give_up_on: ExceptionTypes | None,
        isolation: Isolation,
        is_map: bool,
        map_over: str | None,
        when: Callable[..., Any] | None = None,
        start_delay: float | timedelta | None = None,
        signal: str | None = None,
        signal_timeout: float | None = None,
        child: Workflow | None = None,
        limits: _Limits | None = None,
    ) -> None:
        if not callable(fn):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: a step must be a function, got {fn!r}"
            )
        if name is None:
            name = getattr(fn, "__name__", None)
            if name is None:
                raise WorkflowDefinitionError(
                    f"workflow {self.name!r}: {fn!r} has no __name__: give the step a name="
                )
        step_name = _check_name("step", name)
        where = f"workflow {self.name!r}, step {step_name!r}"
        if step_name in _RESERVED_STEP_NAMES:
            raise WorkflowDefinitionError(f"{where}: {step_name!r} is reserved for step parameters")
        if step_name in self._steps:
            raise WorkflowDefinitionError(f"{where}: duplicate step name")
        _check_options(where, max_attempts, timeout, backoff)
        delay = 0.0 if start_delay is None else _seconds(where, "start_delay", start_delay)
        limits = _check_limits(where, limits or _Limits())
        if child is not None:
            if not isinstance(child, Workflow):
                raise WorkflowDefinitionError(f"{where}: subflow= takes a Workflow, got {child!r}")
            if child is self or self.name in _nested_names(child):
                raise WorkflowDefinitionError(
                    f"{where}: workflow {child.name!r} cannot run {self.name!r} as its own child"
                )
        if isolation not in ("thread", "process"):
            raise WorkflowDefinitionError(f"{where}: isolation must be 'thread' or 'process'")
        qualname = getattr(fn, "__qualname__", "")
        if isolation == "process" and ("<locals>" in qualname or "<lambda>" in qualname):
            raise WorkflowDefinitionError(
                f"{where}: isolation='process' needs a module-level function that a child "
                f"process can import; {qualname or fn!r} is not one"
            )

        if depends_on is None:
            deps: tuple[str, ...] = (next(reversed(self._steps)),) if self._steps else ()
        else:
            if isinstance(depends_on, str) or not isinstance(depends_on, Sequence | set):
                raise WorkflowDefinitionError(
                    f"{where}: depends_on must be a list of step names or functions"
                )
            deps = tuple(self._ref_name(ref, "depends_on") for ref in depends_on)
        if len(set(deps)) != len(deps):
            raise WorkflowDefinitionError(f"{where}: depends_on names a step twice")
        if step_name in deps:
            raise WorkflowDefinitionError(f"{where}: a step cannot depend on itself")

        params = _bind_parameters(where, fn, deps, is_map)
        when_params: tuple[Param, ...] = ()
        if when is not None:
            if not callable(when):
                raise WorkflowDefinitionError(f"{where}: when= takes a function, got {when!r}")
            when_params = _bind_parameters(f"{where}, its when= condition", when, deps, False)
        step = Step(
            name=step_name,
            fn=fn,
            depends_on=deps,
            params=params,
            is_async=_is_async(fn),
            max_attempts=max_attempts,
            timeout=None if timeout is None else float(timeout),
            backoff=backoff,
            retry_on=exception_types(where, "retry_on", retry_on),
            give_up_on=exception_types(where, "give_up_on", give_up_on),
            isolation=isolation,
            is_map=is_map,
            map_over=map_over,
            when=when,
            when_params=when_params,
            start_delay=delay,
            signal=signal,
            signal_timeout=signal_timeout,
            child=child,
            concurrency=limits.concurrency,
            concurrency_key=limits.concurrency_key,
            rate_limit=limits.rate_limit,
            rate_limit_key=limits.rate_limit_key,
        )
        self._steps[step_name] = step
        self._order = None
        self._options.clear()
        self._fingerprint = None
        self._derived.clear()
        cycle = _find_cycle(self._steps)
        if cycle:
            del self._steps[step_name]
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: dependency cycle {' -> '.join(cycle)}"
            )

    # -- the finished graph -------------------------------------------------------------------

    def validate(self) -> Workflow:
        """Check the whole graph (every dependency exists, no cycle, not empty); returns self.

        Called for you by the executor and by ``App.register``; errors in a single step are raised
        as soon as the step is declared.
        """
        if not self._steps:
            raise WorkflowDefinitionError(f"workflow {self.name!r} has no steps")
        for step in self._steps.values():
            for dep in step.depends_on:
                if dep not in self._steps:
                    raise WorkflowDefinitionError(
                        f"workflow {self.name!r}, step {step.name!r}: depends on unknown step "
                        f"{dep!r} (known: {', '.join(self._steps)})"
                    )
        self.topological_order()
        return self

    @property
    def steps(self) -> Mapping[str, Step]:
        """The steps by name, in declaration order."""
        return MappingProxyType(self._steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self._steps.values())

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, steps={list(self._steps)!r})"

    def derived(self, key: Hashable, make: Callable[[], D]) -> D:
        """``make()``, made once for ``key`` and kept until a step is added: what other modules
        derive from the steps and would otherwise make again at every use (the state a run
        starts in: see pypgflow.starting). At most :data:`DERIVED_KEPT` are kept."""
        try:
            return cast(D, self._derived[key])
        except KeyError:
            pass
        value = make()
        if len(self._derived) >= DERIVED_KEPT:
            self._derived.clear()
        self._derived[key] = value
        return value

    @property
    def version(self) -> str:
        """The ``version=`` given, else a fingerprint of the workflow's shape (its steps, their
        dependencies and kinds): a deploy that changes the shape makes a new version, whose
        runs workers of the old code never take, and the other way round."""
        if self.declared_version is not None:
            return self.declared_version
        if self._fingerprint is None:
            # a wait step's signal is part of its kind (appended only then: the fingerprints of
            # workflows without one stay what they were)
            shape = [
                [s.name, list(s.depends_on), s.is_map, s.map_over, s.when is not None]
                + ([s.signal] if s.signal is not None else [])
                + ([f"{s.child.name}@{s.child.version}"] if s.child is not None else [])
                for s in self._steps.values()
            ]
            digest = hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode())
            self._fingerprint = digest.hexdigest()[:12]
        return self._fingerprint

    def topological_order(self) -> tuple[str, ...]:
        """Step names so that every step comes after its dependencies (declaration order on ties)."""
        if self._order is None:
            order: list[str] = []
            placed: set[str] = set()
            pending = list(self._steps.values())
            while pending:
                ready = [s for s in pending if all(d in placed for d in s.depends_on)]
                if not ready:  # pragma: no cover - unknown names are caught by validate()
                    raise WorkflowDefinitionError(f"workflow {self.name!r} cannot be ordered")
                for step in ready:
                    order.append(step.name)
                    placed.add(step.name)
                pending = [s for s in pending if s.name not in placed]
            self._order = tuple(order)
        return self._order

    def dependents(self) -> dict[str, tuple[str, ...]]:
        """For each step, the steps that depend on it."""
        result: dict[str, list[str]] = {name: [] for name in self._steps}
        for step in self._steps.values():
            for dep in step.depends_on:
                result[dep].append(step.name)
        return {name: tuple(deps) for name, deps in result.items()}

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._steps.values() if not s.depends_on)

    @property
    def leaves(self) -> tuple[str, ...]:
        """Steps that nothing depends on: their outputs make the workflow's result."""
        depended = {dep for s in self._steps.values() for dep in s.depends_on}
        return tuple(name for name in self._steps if name not in depended)

    def result_from(self, outputs: Mapping[str, Any]) -> Any:
        """The workflow's result: the final step's output, or a dict keyed by leaf step names."""
        leaves = self.leaves
        if len(leaves) == 1:
            return outputs[leaves[0]]
        return {name: outputs[name] for name in leaves}

    def shape(self) -> list[dict[str, Any]]:
        """The graph as JSON-ready data (names, dependencies, options), in topological order."""
        result = []
        for name in self.topological_order():
            step = self._steps[name]
            result.append(
                {
                    "name": step.name,
                    "depends_on": list(step.depends_on),
                    "map": step.is_map,
                    "map_over": step.map_over,
                    "max_attempts": step.max_attempts,
                    "timeout": step.timeout,
                    "backoff": step.backoff.to_dict() if step.backoff else None,
                    "isolation": step.isolation,
                }
            )
        return result


def _bind_parameters(
    where: str, fn: Callable[..., Any], deps: tuple[str, ...], is_map: bool
) -> tuple[Param, ...]:
    """Decide, once at definition time, where each parameter of ``fn`` gets its value."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise WorkflowDefinitionError(f"{where}: cannot read the function's signature") from exc

    params: list[Param] = []
    free: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise WorkflowDefinitionError(
                f"{where}: parameter {p.name!r} cannot be bound: *args and **kwargs are not "
                "supported; name each input"
            )
        positional_only = p.kind is p.POSITIONAL_ONLY
        if p.name == "ctx":
            params.append(Param(p.name, ArgSource.CONTEXT, positional_only))
        elif p.name in deps and not is_map:
            params.append(Param(p.name, ArgSource.DEPENDENCY, positional_only, p.name))
        elif p.name == "input":
            params.append(Param(p.name, ArgSource.INPUT, positional_only))
        else:
            params.append(Param(p.name, ArgSource.ITEM, positional_only))  # decided below
            free.append(p)

    # The one parameter that no name claims takes the obvious value: the element of a map step,
    # the single dependency's output, or the workflow input of a root step.
    obvious: tuple[ArgSource, str | None] | None
    if is_map:
        obvious = (ArgSource.ITEM, None)
    elif len(deps) == 1:
        obvious = (ArgSource.DEPENDENCY, deps[0])
    elif not deps:
        obvious = (ArgSource.INPUT, None)
    else:
        obvious = None
    # That parameter is the only free one, or the only free one without a default value; and only
    # if no parameter already takes that value by name (``input``, or the dependency's name).
    if obvious is not None and any(
        param.source is obvious[0] and param.dependency == obvious[1]
        for param in params
        if param.source is not ArgSource.ITEM
    ):
        obvious = None
    required_free = [p for p in free if p.default is p.empty]
    taker: inspect.Parameter | None = None
    if obvious is not None:
        if len(free) == 1:
            taker = free[0]
        elif len(required_free) == 1:
            taker = required_free[0]
    if taker is not None:
        assert obvious is not None  # noqa: S101  a type narrowing
        index = next(i for i, param in enumerate(params) if param.name == taker.name)
        params[index] = Param(taker.name, obvious[0], params[index].positional_only, obvious[1])
        required_free = []
    if required_free:
        names = ", ".join(repr(p.name) for p in required_free)
        known = f"its dependencies ({', '.join(deps)})" if deps else "no dependencies"
        raise WorkflowDefinitionError(
            f"{where}: parameter {names} cannot be bound: the step has {known}; a parameter "
            "must be named after a dependency, 'input' or 'ctx'"
            + (", or be the step's single other parameter" if obvious is not None else "")
        )
    # Other free parameters keep their defaults: they are not passed at all, which a positional-only
    # parameter allows only when no bound positional-only parameter comes after it.
    kept: list[Param] = []
    dropped: str | None = None
    for param in params:
        if any(f.name == param.name for f in free) and (taker is None or taker.name != param.name):
            if param.positional_only:
                dropped = param.name
            continue
        if param.positional_only and dropped is not None:
            raise WorkflowDefinitionError(
                f"{where}: parameter {dropped!r} cannot be bound: it is positional-only, keeps its "
                f"default, and comes before {param.name!r}, which must be passed"
            )
        kept.append(param)
    hints = _type_hints(fn)
    return tuple(
        param
        if param.source is ArgSource.CONTEXT
        or (decode := decoder_for(hints.get(param.name))) is None
        else dataclasses.replace(param, decode=decode)
        for param in kept
    )


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The function's resolved parameter annotations; none when they cannot be resolved (the
    parameters then get their values as stored)."""
    target = getattr(fn, "__call__", fn) if not inspect.isroutine(fn) else fn  # noqa: B004
    try:
        return typing.get_type_hints(target)
    except Exception:
        return {}


def _is_async(fn: Callable[..., Any]) -> bool:
    """``async def`` functions, also behind functools.partial or as an object's ``async __call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - the method itself, not callable()
    return not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _find_cycle(steps: Mapping[str, Step]) -> list[str] | None:
    """A dependency cycle among the declared steps, as a path, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in steps[name].depends_on:
            if dep not in steps:
                continue  # a forward reference, checked by validate()
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in steps:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


@dataclass(frozen=True, slots=True)
class StepOptions:
    """How one step is run: attempts, timeout and backoff, after every override is applied."""

    max_attempts: int
    timeout: float
    backoff: Backoff
    #: a failure is retried only if it is one of ``retry_on`` (None: any) and none of
    #: ``give_up_on`` (see :func:`pypgflow.orchestration.step_failed`)
    retry_on: tuple[type[BaseException], ...] | None = None
    give_up_on: tuple[type[BaseException], ...] | None = None


def resolve_options(
    workflow: Workflow,
    step: Step,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    backoff: Backoff | None = None,
) -> StepOptions:
    """A step's own setting wins, then the caller's, then the workflow's, then the defaults."""
    key = (step.name, max_attempts, timeout, backoff)
    cached = workflow._options.get(key)
    if cached is not None:
        return cached
    own_filters = step.retry_on is not None or step.give_up_on is not None
    options = workflow._options[key] = StepOptions(
        max_attempts=_first(step.max_attempts, max_attempts, workflow.max_attempts)
        or DEFAULT_MAX_ATTEMPTS,
        timeout=_first(step.timeout, timeout, workflow.timeout) or DEFAULT_TIMEOUT,
        backoff=_first(step.backoff, backoff, workflow.backoff) or DEFAULT_BACKOFF,
        # the two filters are one policy: a step that sets either replaces the workflow's
        retry_on=step.retry_on if own_filters else workflow.retry_on,
        give_up_on=step.give_up_on if own_filters else workflow.give_up_on,
    )
    return options


T = TypeVar("T")


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)
