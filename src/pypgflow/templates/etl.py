"""Extract, transform, load: ``extract`` -> ``batches`` -> ``transform`` (a map step, one
durable task per batch) -> ``load`` (the fan-in).

``extract(input)`` returns the rows (a list of JSON values); they are cut into batches of
``batch_size``; ``transform(row)`` runs on every row, a batch per task (a batch is retried on
its own; a row it returns None for is dropped); ``load(rows)`` gets every transformed row, in
order, once all batches are done. A large extract should return references (file names, key
ranges) rather than the data: every step's output is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pypgflow.backoff import Backoff
from pypgflow.errors import InvalidArgument, NonRetryable
from pypgflow.workflow import Workflow

Row = Any

#: the demo's rows, extracted when the input names none
DEMO_ROWS = [
    {"id": 1, "name": " Ada Lovelace ", "email": "ADA@EXAMPLE.COM"},
    {"id": 2, "name": "Grace Hopper", "email": "grace@example.com "},
    {"id": 3, "name": "", "email": "nobody@example.com"},
    {"id": 4, "name": "Alan Turing", "email": "Alan@Example.com"},
]


def extract_rows(input: Any) -> list[Row]:
    """The default extract: the input's ``"rows"``, or :data:`DEMO_ROWS`."""
    if isinstance(input, dict) and "rows" in input:
        rows = input["rows"]
        if not isinstance(rows, list):
            raise NonRetryable(f"the input's rows must be a list, got {type(rows).__name__}")
        return rows
    return list(DEMO_ROWS)


def clean_row(row: Row) -> Row | None:
    """The default transform: names and e-mail addresses trimmed, addresses in lower case;
    a row without a name dropped."""
    if not isinstance(row, dict):
        return row
    name = str(row.get("name") or "").strip()
    if not name:
        return None
    return {**row, "name": name, "email": str(row.get("email") or "").strip().lower()}


def count_rows(rows: list[Row]) -> dict[str, Any]:
    """The default load: nothing written, the count and the rows reported (replace it with
    an insert into your warehouse)."""
    return {"loaded": len(rows), "rows": rows}


def batched(rows: list[Row], size: int) -> list[list[Row]]:
    """``rows`` cut into lists of at most ``size``, in order."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def etl_workflow(
    extract: Callable[[Any], list[Row]] | None = None,
    transform: Callable[[Row], Row | None] | None = None,
    load: Callable[[list[Row]], Any] | None = None,
    *,
    name: str = "etl",
    batch_size: int = 100,
    max_attempts: int = 3,
    backoff: Backoff | None = None,
    timeout: float = 300.0,
) -> Workflow:
    """The ETL workflow named ``name``; its output is what ``load`` returns. Each step gets
    ``max_attempts`` attempts of at most ``timeout`` seconds (the transform: each batch)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgument(
            f"etl_workflow: batch_size must be an integer >= 1, got {batch_size!r}"
        )
    extractor = extract or extract_rows
    transformer = transform or clean_row
    loader = load or count_rows
    for label, value in (("extract", extractor), ("transform", transformer), ("load", loader)):
        if not callable(value):
            raise InvalidArgument(f"etl_workflow: {label} must be a function, got {value!r}")

    flow = Workflow(name, max_attempts=max_attempts, backoff=backoff, timeout=timeout)

    @flow.step(name="extract")
    def extract_step(input: Any) -> list[Row]:
        rows = extractor(input)
        if not isinstance(rows, list):
            raise NonRetryable(f"extract must return a list of rows, got {type(rows).__name__}")
        return rows

    @flow.step(name="batches")
    def batches_step(rows: list[Row]) -> list[list[Row]]:
        return batched(rows, batch_size)

    @flow.map(name="transform", over="batches")
    def transform_step(batch: list[Row]) -> list[Row]:
        return [out for out in map(transformer, batch) if out is not None]

    @flow.step(name="load", depends_on=["transform"])
    def load_step(transform: list[list[Row]]) -> Any:
        return loader([row for batch in transform for row in batch])

    return flow.validate()


#: the input of the starter's first run (``$module``: the starter module's name)
EXAMPLE = (
    '{"rows": [{"name": " Ada ", "email": "ADA@EXAMPLE.COM"}, {"name": "", "email": "x@y.z"}]}'
)

STARTER = '''\
"""An ETL workflow, from `pypgflow new etl`: extract -> batches -> transform (one durable
task per batch, retried on its own) -> load.

    pypgflow migrate --app $module:app
    pypgflow worker $module:app
    pypgflow start $module:app etl --wait
    pypgflow start $module:app etl --input '{"rows": [{"name": " Ada ", "email": "A@X.ORG"}]}' --wait
"""

from typing import Any

from pypgflow import App
from pypgflow.templates import etl_workflow
from pypgflow.templates.etl import DEMO_ROWS

# PYPGFLOW_DATABASE_URL if set, else the SQLite file pypgflow.db in the working directory.
app = App()


def extract(input: Any) -> list[Any]:
    # e.g. rows of a CSV file, of an API's pages, of a query
    return input["rows"] if isinstance(input, dict) and "rows" in input else DEMO_ROWS


def transform(row: dict[str, Any]) -> dict[str, Any] | None:
    name = str(row.get("name") or "").strip()
    if not name:
        return None  # dropped
    return {**row, "name": name, "email": str(row.get("email") or "").strip().lower()}


def load(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # e.g. one INSERT ... ON CONFLICT per batch: a load may run more than once
    return {"loaded": len(rows), "names": [row["name"] for row in rows]}


flow = app.register(etl_workflow(extract, transform, load, batch_size=2))
'''
