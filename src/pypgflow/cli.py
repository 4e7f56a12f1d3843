"""The `pypgflow` command line: operators' tools over an App and its database.

Commands that run the user's workflows (``worker``, ``start``) load the app named by
``MODULE:APP``; commands that only read or change runs need just a database URL (``--database-url``
or ``PYPGFLOW_DATABASE_URL``), or take it from an app with ``--app MODULE:APP``.

Exit codes: 0 success, 1 an error (or a run that failed, with ``start --wait``), 2 a usage error.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from pypgflow.app import App, Job
from pypgflow.defaults import DATABASE_URL_ENV, DEFAULT_URL
from pypgflow.errors import (
    AttemptError,
    ConfigurationError,
    PypgflowError,
    RunCancelled,
    WorkflowFailed,
)
from pypgflow.leader import Retention
from pypgflow.records import InstanceInfo, RunInfo, ScheduleInfo, StepInfo
from pypgflow.status import RunStatus, StepStatus

DEFAULT_SCHEMA = "pypgflow"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(pypgflow_context)s: %(message)s"
SUMMARY_WIDTH = 160

# -- configuration and errors ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    """The global options, shared by every command through the click context."""

    database_url: str | None = None
    schema: str = DEFAULT_SCHEMA
    schema_given: bool = False


class _Group(click.Group):
    """Turns pypgflow's errors into a one-line ``Error: ...`` and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PypgflowError as exc:
            raise click.ClickException(_one_line(exc.message)) from exc


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def _config(ctx: click.Context) -> _Config:
    config = ctx.find_object(_Config)
    return config if config is not None else _Config(os.environ.get(DATABASE_URL_ENV) or None)


def _warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


# -- loading the app ------------------------------------------------------------------------------


def load_app(spec: str, *, database_url: str | None = None) -> App:
    """The App named by ``MODULE:ATTR``: an App, or a callable returning one.

    The current directory is put on ``sys.path`` first (as other tools do), and ``database_url``,
    if given, is exported as PYPGFLOW_DATABASE_URL while the module is imported and the factory
    called, so an ``App()`` without a URL connects where the command line says.
    """
    module_name, colon, attr = spec.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigurationError(
            f"expected MODULE:APP, e.g. myproject.flows:app or myproject.flows:create_app, "
            f"got {spec!r}"
        )
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        raise ConfigurationError(
            f"{module_name!r} is a path: give a module name (myproject.flows, not "
            "myproject/flows.py), importable from the current directory"
        )
    if module_name.startswith("."):
        raise ConfigurationError(f"relative module names are not supported: {module_name!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    with _exported(DATABASE_URL_ENV, database_url):
        module = _import(module_name)
        target: Any = module
        for part in attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ConfigurationError(
                    f"module {module_name!r} has no attribute {attr!r} (from {spec!r})"
                ) from None
        if isinstance(target, App):
            return target
        if not callable(target) or isinstance(target, Job):  # never run a user's job here
            raise ConfigurationError(
                f"{spec!r} is not a pypgflow App (nor a function returning one): got "
                f"{type(target).__name__}"
            )
        made = target()
    if not isinstance(made, App):
        raise ConfigurationError(f"{spec!r} returned {type(made).__name__}, not a pypgflow App")
    return made


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigurationError(
                f"cannot import module {module_name!r}: no module named {missing!r} "
                "(searched the current directory and the Python path)"
            ) from None
        raise  # the module exists but imports something missing: its traceback helps


@contextlib.contextmanager
def _exported(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` for the duration of the block (nothing if value is None)."""
    if value is None:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _user_app(ctx: click.Context, spec: str) -> App:
    """The user's app, closed when the command ends; warns if it ignores the global options."""
    config = _config(ctx)
    app = ctx.with_resource(load_app(spec, database_url=config.database_url))
    if config.database_url and app.url and app.url != config.database_url:
        _warn(
            f"{spec} connects to its own database, not to the --database-url "
            f"({DATABASE_URL_ENV}) given"
        )
    schema = getattr(app.engine, "schema", None)
    if config.schema_given and schema is not None and schema != config.schema:
        _warn(f"{spec} uses schema {schema!r}, not --schema {config.schema!r}")
    return app


def _database_app(ctx: click.Context, app_spec: str | None) -> App:
    """For commands that only need the database: the app of --app, or one on the URL."""
    if app_spec:
        return _user_app(ctx, app_spec)
    config = _config(ctx)
    # Like App(): without a URL, the embedded default in the working directory.
    return ctx.with_resource(App(config.database_url or DEFAULT_URL, schema=config.schema))


_app_option = click.option(
    "--app",
    "app_spec",
    metavar="MODULE:APP",
    help="Take the database URL and schema from this app instead of --database-url.",
)
_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table, for scripts."
)

# -- output helpers -------------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """Plain-text columns, two spaces apart; columns in ``right`` are right-aligned."""
    body = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    right_aligned = set(right)
    lines = []
    for row in [list(headers), *body]:
        cells = [
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``Label  value`` lines, values aligned; continuation lines of a value are indented."""
    items = list(pairs)
    width = max((len(label) for label, _ in items), default=0)
    indent = "\n" + " " * (width + 2)
    return "\n".join(
        f"{label.ljust(width)}  {value.replace(chr(10), indent)}" for label, value in items
    )


def when(moment: datetime | None) -> str:
    """A timestamp in the local time zone, to the second."""
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    """A duration for people: 35ms, 1.25s, 12.3s, 4m05s, 2h07m, 3d04h."""
    if value is None:
        return "-"
    value = max(0.0, value)
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 10:
        return f"{value:.2f}s"
    if value < 60:
        return f"{value:.1f}s"
    whole = int(value)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _elapsed(started: datetime | None, finished: datetime | None, *, going: bool) -> float | None:
    """Seconds from start to finish, or to now while still going."""
    if started is None or (finished is None and not going):
        return None
    return ((finished or datetime.now(UTC)) - started).total_seconds()


def _from_now(now: datetime, moment: datetime) -> str:
    """``in 5s``, ``in 4m05s``; ``overdue 3s`` for a moment past (no leader is ticking)."""
    delta = (moment - now).total_seconds()
    if delta < 0:
        return f"overdue {_ago(now, moment)[:-4]}"
    return f"in {int(delta)}s" if delta < 60 else f"in {seconds(delta)}"


def _ago(now: datetime, moment: datetime) -> str:
    age = max(0.0, (now - moment).total_seconds())
    return f"{int(age)}s ago" if age < 60 else f"{seconds(age)} ago"


def summary(value: Any, width: int = SUMMARY_WIDTH) -> str:
    """``value`` as compact JSON on one line, shortened to ``width`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    if len(text) <= width:
        return text
    return f"{text[: width - 3]}... ({len(text)} characters; --json shows all)"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _run_json(info: RunInfo, *, steps: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": info.id,
        "workflow": info.workflow,
        "status": info.status.value,
        "queue": info.queue,
        "priority": info.priority,
        "idempotency_key": info.idempotency_key,
        "created_at": _iso(info.created_at),
        "scheduled_at": _iso(info.scheduled_at),
        "started_at": _iso(info.started_at),
        "finished_at": _iso(info.finished_at),
        "duration": info.duration,
        "input": info.input,
        "output": info.output,
        "error": None if info.error is None else info.error.to_dict(),
    }
    if steps:
        data["steps"] = [_step_json(step) for step in info.steps]
    return data


def _step_json(step: StepInfo) -> dict[str, Any]:
    return {
        "name": step.name,
        "status": step.status.value,
        "attempts": step.attempts,
        "depends_on": list(step.depends_on),
        "is_map": step.is_map,
        "task_count": step.task_count,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "duration": step.duration,
        "instance_id": step.instance_id,
        "output": step.output,
        "errors": [error.to_dict() for error in step.errors],
    }


def _instance_json(instance: InstanceInfo) -> dict[str, Any]:
    return {
        "instance_id": instance.instance_id,
        "hostname": instance.hostname,
        "pid": instance.pid,
        "status": instance.status,
        "queues": instance.queues,
        "load": instance.load,
        "started_at": _iso(instance.started_at),
        "heartbeat_at": _iso(instance.heartbeat_at),
        "leader": instance.leader,
    }


def _schedule_json(schedule: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "workflow": schedule.workflow,
        "input": schedule.input,
        "queue": schedule.queue,
        "priority": schedule.priority,
        "last_tick_at": _iso(schedule.last_tick_at),
        "next_tick_at": _iso(schedule.next_tick_at),
    }


def _run_error(error: AttemptError) -> str:
    """A run's error summary: where it failed, after how many attempts, and why."""
    attempts = error.attempt
    after = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    return f"step {error.where!r}{after}: {error.type or 'Error'}: {error.message}"


def _attempt_error(error: AttemptError, *, traceback: bool) -> str:
    where = f"{error.where} attempt {error.attempt}"
    if error.instance_id:
        where += f" on {error.instance_id}"
    text = f"  {where}: {error.type}: {error.message}".replace("\n", "\n    ")
    if traceback and error.traceback:
        text += "\n" + "\n".join(f"    {line}" for line in error.traceback.rstrip().splitlines())
    return text


# -- worker logging -------------------------------------------------------------------------------


class _LogFormatter(logging.Formatter):
    """Adds `` [run=... step=name#attempt]`` to records that carry pypgflow's run context."""

    def format(self, record: logging.LogRecord) -> str:
        parts = []
        run_id = getattr(record, "run_id", None)
        if run_id:
            parts.append(f"run={run_id}")
        step = getattr(record, "step", None)
        if step:
            task_index = getattr(record, "task_index", None)
            attempt = getattr(record, "attempt", None)
            where = step if task_index is None else f"{step}[{task_index}]"
            parts.append(f"step={where}" + (f"#{attempt}" if attempt else ""))
        record.pypgflow_context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def configure_logging(level: str) -> Callable[[], None]:
    """Log to stderr at ``level`` (unless the app configured logging itself); returns an undo."""
    root = logging.getLogger()
    previous_level = root.level
    handler: logging.Handler | None = None
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LogFormatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())

    def undo() -> None:
        if handler is not None:
            root.removeHandler(handler)
        root.setLevel(previous_level)

    return undo


def parse_queues(values: Sequence[str], default_slots: int) -> dict[str, int]:
    """``["default=10", "emails"]`` -> ``{"default": 10, "emails": default_slots}``."""
    if not values:
        return {"default": default_slots}
    queues: dict[str, int] = {}
    for value in values:
        name, equals, slots_text = value.partition("=")
        name = name.strip()
        if not name:
            raise click.BadParameter(f"{value!r} has no queue name (NAME or NAME=SLOTS)")
        if name in queues:
            raise click.BadParameter(f"queue {name!r} is given twice")
        slots = default_slots
        if equals:
            try:
                slots = int(slots_text)
            except ValueError:
                raise click.BadParameter(
                    f"{value!r}: SLOTS must be a whole number, e.g. {name}=10"
                ) from None
            if slots < 1:
                raise click.BadParameter(f"{value!r}: SLOTS must be at least 1")
        queues[name] = slots
    return queues


# -- start input ----------------------------------------------------------------------------------


def read_input(value: str | None) -> Any:
    """The run input from ``--input``: JSON text, ``@file.json``, or ``-`` for stdin."""
    if value is None:
        return None
    if value == "-":
        source, text = "standard input", sys.stdin.read()
    elif value.startswith("@"):
        path = value[1:]
        source = f"file {path!r}"
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path!r}: {exc.strerror or exc}", param_hint="'--input'"
            ) from None
        except UnicodeDecodeError as exc:
            raise click.BadParameter(
                f"{source} is not UTF-8 text: {exc.reason}", param_hint="'--input'"
            ) from None
    else:
        source, text = "the input", value
    if not text.strip():
        raise click.BadParameter(
            f"{source} is empty: give JSON, such as {{}} or null", param_hint="'--input'"
        )
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            param_hint="'--input'",
        ) from None
    except ValueError as exc:
        raise click.BadParameter(
            f"{source} is not valid JSON: {exc}", param_hint="'--input'"
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (use null or a number)")


# -- commands -------------------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    metavar="URL",
    help=(
        "Database URL: postgresql://user@host:5432/dbname or sqlite:///path/to/file.db "
        f"[env: {DATABASE_URL_ENV}; default: {DEFAULT_URL}]."
    ),
)
@click.option(
    "--schema",
    default=DEFAULT_SCHEMA,
    show_default=True,
    metavar="NAME",
    help="The database schema holding pypgflow's tables.",
)
@click.version_option(package_name="pypgflow")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, schema: str) -> None:
    """pypgflow: durable workflows for Python on PostgreSQL or SQLite.

    Commands that run your workflows (worker, start) take MODULE:APP, the
    module and attribute of your App (or of a function returning one),
    importable from the current directory. The others need only the
    database: --database-url (before the command), PYPGFLOW_DATABASE_URL,
    or --app MODULE:APP; without any, the embedded default
    sqlite:///pypgflow.db in the current directory.

    Exit codes: 0 success, 1 error (or a failed run with start --wait),
    2 usage error.

    \b
    Examples:
      export PYPGFLOW_DATABASE_URL=postgresql://postgres@localhost:5432/app
      pypgflow migrate
      pypgflow worker myproject.flows:app --queue default=10
      pypgflow start myproject.flows:app hello --input '{"name": "World"}' --wait
      pypgflow runs --status failed
    """
    source = ctx.get_parameter_source("schema")
    ctx.obj = _Config(
        database_url=database_url or None,
        schema=schema,
        schema_given=source not in (None, click.core.ParameterSource.DEFAULT),
    )


@main.command()
@_app_option
@click.option(
    "--check", is_flag=True, help="Apply nothing: exit 1 if the schema is missing or out of date."
)
@click.pass_context
def migrate(ctx: click.Context, app_spec: str | None, check: bool) -> None:
    """Create or upgrade pypgflow's schema in the database.

    Safe to repeat: an up-to-date schema is left as it is; concurrent runs
    wait for each other.

    \b
    Examples:
      pypgflow --database-url postgresql://postgres@localhost:5432/app migrate
      pypgflow migrate --app myproject.flows:app
      pypgflow migrate --check    # in a deploy pipeline: is the schema current?
    """
    app = _database_app(ctx, app_spec)
    path = getattr(app.engine, "path", None)  # SQLite has a file, not a schema
    where = (
        f"the SQLite database {path}"
        if path
        else f"schema {getattr(app.engine, 'schema', _config(ctx).schema)!r}"
    )
    version = getattr(app.engine, "latest_version", None)
    at_version = f" at version {version}" if version is not None else ""
    if check:
        app.engine.check_schema()
        click.echo(f"{where[0].upper()}{where[1:]} is up to date{at_version}.")
        return
    applied = app.migrate()
    if applied:
        versions = ", ".join(str(v) for v in applied)
        click.echo(f"Migrated {where}{at_version} (applied: {versions}).")
    else:
        click.echo(f"{where[0].upper()}{where[1:]} is already up to date{at_version}.")


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "-q",
    "--queue",
    "queue_specs",
    multiple=True,
    metavar="NAME[=SLOTS]",
    help="A queue to work on, with how many of its steps may run at once (repeatable; "
    "default: the 'default' queue).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    metavar="SLOTS",
    default=10,
    show_default=True,
    help="Slots of each queue given without =SLOTS.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM/SIGINT, how long running steps may finish before they are handed back.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to look for work when no notification arrives.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to tell the database this worker is alive (keep it well under --stale-after).",
)
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="A worker silent this long is offline: its steps are rescued by the others, and this "
    "worker stops its own steps if it cannot reach the database for as long [default: the "
    "app's, 30].",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the leader's lease lasts (renewed every third of it): a leader that dies "
    "is replaced within this time. Give every worker the same value.",
)
@click.option(
    "--keep-completed",
    type=click.FloatRange(min=0),
    default=7.0,
    show_default=True,
    metavar="DAYS",
    help="The leader deletes completed and cancelled runs this long after they finished.",
)
@click.option(
    "--keep-failed",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="DAYS",
    help="The leader deletes failed runs this long after they failed.",
)
@click.option(
    "--instance-id",
    metavar="ID",
    help="This worker's name in `pypgflow instances` [default: PYPGFLOW_INSTANCE_ID, else "
    "host-pid-random].",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Log to stderr from this level up.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    queue_specs: tuple[str, ...],
    concurrency: int,
    shutdown_timeout: float,
    poll_interval: float,
    heartbeat_interval: float,
    stale_after: float | None,
    lease_ttl: float,
    keep_completed: float,
    keep_failed: float,
    instance_id: str | None,
    log_level: str,
) -> None:
    """Run a worker for the workflows of MODULE:APP.

    It works on the given queues until stopped, logging to stderr.

    SIGTERM or Ctrl-C stops it gracefully: no new work is claimed, running
    steps get --shutdown-timeout seconds to finish, the rest go back to
    their queues. A second signal cancels the running steps at once.

    \b
    Examples:
      pypgflow worker myproject.flows:app
      pypgflow worker myproject.flows:app --queue default=10 --queue emails=2
      pypgflow worker myproject.flows:create_app -q reports -c 4 --shutdown-timeout 120
    """
    try:
        queues = parse_queues(queue_specs, concurrency)
    except click.BadParameter as exc:
        exc.param_hint = "'--queue'"
        raise
    app = _user_app(ctx, app_spec)
    if instance_id:
        app.instance_id = instance_id
    undo_logging = configure_logging(log_level)
    try:
        app.run_worker(
            queues,
            poll_interval=poll_interval,
            heartbeat_interval=heartbeat_interval,
            stale_after=stale_after,
            shutdown_timeout=shutdown_timeout,
            lease_ttl=lease_ttl,
            retention=Retention(
                completed=timedelta(days=keep_completed), failed=timedelta(days=keep_failed)
            ),
        )
    finally:
        undo_logging()


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.argument("workflow")
@click.option(
    "-i",
    "--input",
    "input_value",
    metavar="JSON|@FILE|-",
    help="The run input: JSON text, @file.json, or - to read it from stdin [default: null].",
)
@click.option(
    "--queue", default="default", show_default=True, metavar="NAME", help="The queue to run it on."
)
@click.option(
    "--priority",
    type=click.IntRange(0, 9),
    default=0,
    show_default=True,
    metavar="0-9",
    help="0 (first) to 9 (last).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Start no sooner than this many seconds from now.",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Start at most one run per key: repeating it returns the first run's id.",
)
@click.option("--wait", is_flag=True, help="Wait for the run to finish and print its result.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --wait: give up waiting (exit 1) after this long [default: wait forever].",
)
@click.pass_context
def start(
    ctx: click.Context,
    app_spec: str,
    workflow: str,
    input_value: str | None,
    queue: str,
    priority: int,
    delay: float | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Start a run of WORKFLOW, registered with the app MODULE:APP.

    Prints the run id. With --wait, prints the run's result as JSON once it
    completes, or the error and exit code 1 if it failed or was cancelled.
    A worker must be running for the run to make progress.

    \b
    Examples:
      pypgflow start myproject.flows:app hello --input '{"name": "World"}'
      pypgflow start myproject.flows:app report --input @params.json --wait --timeout 300
      echo '[1, 2, 3]' | pypgflow start myproject.flows:app total --input - --wait
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")
    run_input = read_input(input_value)
    app = _user_app(ctx, app_spec)
    run = app.start(
        workflow,
        run_input,
        queue=queue,
        priority=priority,
        delay=delay,
        idempotency_key=idempotency_key,
    )
    if not wait:
        click.echo(run.id)
        return
    click.echo(f"Started run {run.id} of {workflow}; waiting for it to finish...", err=True)
    try:
        result = run.result(timeout=timeout)
    except KeyboardInterrupt:
        click.echo(f"Stopped waiting; run {run.id} goes on (see: pypgflow run {run.id}).", err=True)
        ctx.exit(130)
    except WorkflowFailed as exc:
        raise click.ClickException(
            f"{_one_line(exc.message)} (details: pypgflow run {run.id})"
        ) from exc
    except RunCancelled as exc:
        raise click.ClickException(_one_line(exc.message)) from exc
    _echo_json(result)


@main.command("runs")
@_app_option
@click.option(
    "--status",
    type=click.Choice([s.value for s in RunStatus], case_sensitive=False),
    help="Only runs in this state.",
)
@click.option("--workflow", metavar="NAME", help="Only runs of this workflow.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="At most this many runs, newest first.",
)
@_json_option
@click.pass_context
def list_runs(
    ctx: click.Context,
    app_spec: str | None,
    status: str | None,
    workflow: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first.

    The table shows id, workflow, status, created and duration (so far, for
    a running run); --json shows everything.

    \b
    Examples:
      pypgflow runs
      pypgflow runs --status failed --workflow hello --limit 10
      pypgflow runs --status running --json
    """
    app = _database_app(ctx, app_spec)
    runs = app.list_runs(status=status.lower() if status else None, workflow=workflow, limit=limit)
    if as_json:
        _echo_json([_run_json(info, steps=False) for info in runs])
        return
    if not runs:
        click.echo("No runs found.")
        return
    rows = [
        (
            info.id,
            info.workflow,
            info.status.value,
            when(info.created_at),
            seconds(_elapsed(info.started_at, info.finished_at, going=not info.status.finished)),
        )
        for info in runs
    ]
    click.echo(table(["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"], rows, right=[4]))


@main.command("run")
@click.argument("run_id")
@_app_option
@click.option("--traceback", is_flag=True, help="Show the traceback of each failed attempt.")
@_json_option
@click.pass_context
def show_run(
    ctx: click.Context, run_id: str, app_spec: str | None, traceback: bool, as_json: bool
) -> None:
    """Show a run, its steps and their errors.

    First the run (workflow, status, times, input, output, error), then its
    steps (status, attempts, duration, instance), then every failed
    attempt's error (with --traceback, its traceback).

    \b
    Examples:
      pypgflow run 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e
      pypgflow run 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e --traceback
      pypgflow run 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e --json | jq .steps
    """
    app = _database_app(ctx, app_spec)
    info = app.get_run(run_id)
    if as_json:
        _echo_json(_run_json(info, steps=True))
        return
    click.echo(fields(_run_fields(info)))
    if not info.steps:
        return
    click.echo()
    rows = [
        (
            _step_name(step),
            step.status.value,
            str(step.attempts),
            seconds(_elapsed(step.started_at, step.finished_at, going=_step_going(step))),
            step.instance_id or "-",
        )
        for step in info.steps
    ]
    click.echo(table(["STEP", "STATUS", "ATTEMPTS", "DURATION", "INSTANCE"], rows, right=[2, 3]))
    errors = [error for step in info.steps for error in step.errors]
    if errors:
        click.echo()
        click.echo("Failed attempts:")
        for error in errors:
            click.echo(_attempt_error(error, traceback=traceback))


def _run_fields(info: RunInfo) -> list[tuple[str, str]]:
    going = not info.status.finished
    pairs = [
        ("Run", info.id),
        ("Workflow", info.workflow),
        ("Status", info.status.value),
        ("Queue", f"{info.queue} (priority {info.priority})"),
    ]
    if info.idempotency_key:
        pairs.append(("Idempotency key", info.idempotency_key))
    pairs.append(("Created", when(info.created_at)))
    if info.scheduled_at is not None and info.scheduled_at > info.created_at:
        pairs.append(("Scheduled", when(info.scheduled_at)))
    pairs += [
        ("Started", when(info.started_at)),
        ("Finished", when(info.finished_at)),
        ("Duration", seconds(_elapsed(info.started_at, info.finished_at, going=going))),
        ("Input", summary(info.input)),
    ]
    if info.status is RunStatus.COMPLETED:
        pairs.append(("Output", summary(info.output)))
    if info.error:
        pairs.append(("Error", _run_error(info.error)))
    return pairs


def _step_going(step: StepInfo) -> bool:
    return step.status in (StepStatus.WAITING, StepStatus.READY)


def _step_name(step: StepInfo) -> str:
    if not step.is_map:
        return step.name
    return f"{step.name} [map: {'?' if step.task_count is None else step.task_count}]"


@main.command()
@click.argument("run_id")
@_app_option
@click.pass_context
def retry(ctx: click.Context, run_id: str, app_spec: str | None) -> None:
    """Resume a failed or cancelled run from its unfinished steps.

    Completed steps are kept, not run again; each resumed step gets a fresh
    attempt budget. Exit code 1 if the run is not failed or cancelled.

    \b
    Examples:
      pypgflow retry 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e
      pypgflow runs --status failed --json | jq -r '.[].id' | xargs -n1 pypgflow retry
    """
    app = _database_app(ctx, app_spec)
    if app.retry(run_id):
        click.echo(f"Run {run_id} resumed: its unfinished steps are queued again.")
        return
    status = app.get_run(run_id).status
    raise click.ClickException(
        f"run {run_id} is {status.value}: only failed or cancelled runs can be retried"
    )


@main.command()
@click.argument("run_id")
@_app_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, app_spec: str | None) -> None:
    """Cancel a pending or running run.

    Its waiting steps are cancelled; running steps see ctx.cancelled (async
    steps are cancelled). Cancelling a cancelled run again succeeds; exit
    code 1 if the run had already completed or failed.

    \b
    Examples:
      pypgflow cancel 0f8e5bd2-4a1c-4be5-9d0e-6c0c1f7a9b3e
    """
    app = _database_app(ctx, app_spec)
    if app.cancel(run_id):
        click.echo(f"Run {run_id} cancelled.")
        return
    status = app.get_run(run_id).status
    if status is RunStatus.CANCELLED:
        click.echo(f"Run {run_id} was already cancelled.")
        return
    raise click.ClickException(f"run {run_id} already finished ({status.value}): not cancelled")


@main.command()
@_app_option
@click.option(
    "--stale-after",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Show an instance as offline once its last heartbeat is this old.",
)
@_json_option
@click.pass_context
def instances(ctx: click.Context, app_spec: str | None, stale_after: float, as_json: bool) -> None:
    """List the registered worker instances.

    For each: id, host, pid, status (online, or offline once its heartbeat
    is --stale-after old), queues with their slots, load (steps running),
    when it started and its last heartbeat.

    \b
    Examples:
      pypgflow instances
      pypgflow instances --stale-after 60 --json
    """
    app = _database_app(ctx, app_spec)
    found = app.instances(stale_after=stale_after)
    if as_json:
        _echo_json([_instance_json(instance) for instance in found])
        return
    if not found:
        click.echo("No worker instances registered.")
        return
    now = datetime.now(UTC)
    rows = [
        (
            instance.instance_id,
            instance.hostname,
            str(instance.pid),
            instance.status,
            ",".join(f"{name}={slots}" for name, slots in sorted(instance.queues.items())),
            str(instance.load),
            when(instance.started_at),
            f"{when(instance.heartbeat_at)} ({_ago(now, instance.heartbeat_at)})",
        )
        for instance in found
    ]
    headers = ["INSTANCE", "HOST", "PID", "STATUS", "QUEUES", "LOAD", "STARTED", "LAST HEARTBEAT"]
    click.echo(table(headers, rows, right=[2, 5]))
    leader = next((instance.instance_id for instance in found if instance.leader), None)
    click.echo(f"\nLeader: {leader or 'none (no instance holds the leader lease)'}")


@main.command("schedules")
@_app_option
@_json_option
@click.pass_context
def list_schedules(ctx: click.Context, app_spec: str | None, as_json: bool) -> None:
    """List the cron schedules, with their last and next ticks.

    Workers store their app's schedules (app.schedule, @app.job(cron=...))
    when they start; the leader instance starts one run per tick. For each:
    name, cron expression, time zone, workflow, queue, the last tick turned
    into a run and the next tick due.

    \b
    Examples:
      pypgflow schedules
      pypgflow schedules --app myproject.flows:app --json
    """
    app = _database_app(ctx, app_spec)
    found = app.schedules()
    if as_json:
        _echo_json([_schedule_json(schedule) for schedule in found])
        return
    if not found:
        click.echo("No schedules stored (workers store their app's schedules when they start).")
        return
    now = datetime.now(UTC)
    rows = [
        (
            schedule.name,
            schedule.cron,
            schedule.timezone,
            schedule.workflow,
            schedule.queue,
            when(schedule.last_tick_at),
            "-"
            if schedule.next_tick_at is None
            else f"{when(schedule.next_tick_at)} ({_from_now(now, schedule.next_tick_at)})",
        )
        for schedule in found
    ]
    headers = ["SCHEDULE", "CRON", "TIMEZONE", "WORKFLOW", "QUEUE", "LAST TICK", "NEXT TICK"]
    click.echo(table(headers, rows))


@main.command()
@click.option(
    "--database-url",
    "demo_url",
    metavar="URL",
    help="Where to store the demo's runs, e.g. postgresql://postgres@127.0.0.1:5432/postgres "
    "[default: sqlite:///pypgflow-demo.db, in the current directory; PYPGFLOW_DATABASE_URL "
    "is not used].",
)
@click.pass_context
def demo(ctx: click.Context, demo_url: str | None) -> None:
    """Run example workflows durably and show their progress.

    Stores 5 runs of two workflows in a database (migrated first), runs a
    worker in this process until they finish, then prints a summary and
    the commands to inspect them. Exit code 1 if a run did not complete.

    \b
    Examples:
      pypgflow demo
      pypgflow demo --database-url postgresql://postgres@127.0.0.1:5432/postgres
    """
    from pypgflow.demo import run_demo

    # `pypgflow --database-url URL demo` counts too, but not PYPGFLOW_DATABASE_URL.
    given = ctx.parent.get_parameter_source("database_url") if ctx.parent else None
    if demo_url is None and given is click.core.ParameterSource.COMMANDLINE:
        demo_url = _config(ctx).database_url
    if not run_demo(demo_url).succeeded:
        ctx.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="pypgflow")
