"""Map-reduce over a list of URLs or files: ``sources`` -> ``map`` (a map step: one durable
task per source, retried on its own) -> ``reduce``.

The input is the list of sources (strings: ``https://...`` URLs or file paths), or an object
with ``"sources"``. ``mapper(source)`` returns a JSON value for one source; ``reducer(results)``
gets every result in the order of the sources. The default mapper counts the words of a file,
or of a URL's body (fetched with urllib, under a timeout: a 4xx fails at once, a 429 or 5xx
is retried, after its ``Retry-After`` when it names one); the default reducer sums them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pypgflow.backoff import Backoff
from pypgflow.errors import InvalidArgument, NonRetryable
from pypgflow.templates.http import judge, urllib_request
from pypgflow.workflow import Workflow

WORD = re.compile(r"\w+")
#: seconds a default mapper's HTTP request may take
FETCH_TIMEOUT = 10.0


def read_source(source: str, *, timeout: float = FETCH_TIMEOUT) -> str:
    """The text of a source: a URL's body (GET) or a file's content (UTF-8). A file that does
    not exist fails at once (``NonRetryable``): another attempt would not find it either."""
    if source.startswith(("http://", "https://")):
        answer = urllib_request("GET", source, timeout=timeout)
        judge(answer.status, answer.retry_after, what=f"GET {source}")
        return answer.body
    path = Path(source.removeprefix("file://"))
    if not path.is_file():
        raise NonRetryable(f"no such file: {source!r}")
    return path.read_text(encoding="utf-8", errors="replace")


def count_words(source: str) -> dict[str, Any]:
    """The default mapper: ``{"source": source, "words": N}``."""
    return {"source": source, "words": len(WORD.findall(read_source(source)))}


def sum_words(results: list[Any]) -> dict[str, Any]:
    """The default reducer: the total of the mappers' ``"words"``, and each source's."""
    return {
        "sources": len(results),
        "words": sum(int(r.get("words", 0)) for r in results if isinstance(r, dict)),
        "by_source": {r["source"]: r["words"] for r in results if isinstance(r, dict)},
    }


def map_reduce_workflow(
    mapper: Callable[[str], Any] | None = None,
    reducer: Callable[[list[Any]], Any] | None = None,
    *,
    name: str = "map_reduce",
    max_attempts: int = 3,
    backoff: Backoff | None = None,
    timeout: float = 60.0,
) -> Workflow:
    """The map-reduce workflow named ``name``; its output is what ``reducer`` returns. Every
    source gets ``max_attempts`` attempts of at most ``timeout`` seconds."""
    map_fn = mapper or count_words
    reduce_fn = reducer or sum_words
    for label, value in (("mapper", map_fn), ("reducer", reduce_fn)):
        if not callable(value):
            raise InvalidArgument(f"map_reduce_workflow: {label} must be a function, got {value!r}")

    flow = Workflow(name, max_attempts=max_attempts, backoff=backoff, timeout=timeout)

    @flow.step(name="sources", max_attempts=1)
    def sources(input: Any) -> list[str]:
        found = input.get("sources") if isinstance(input, dict) else input
        if not isinstance(found, list) or not all(isinstance(s, str) and s for s in found):
            raise NonRetryable(
                f"the input must be a list of URLs or file paths (or {{'sources': [...]}}), "
                f"got {input!r}"
            )
        return found

    @flow.map(name="map", over="sources")
    def map_step(source: str) -> Any:
        return map_fn(source)

    @flow.step(name="reduce", depends_on=["map"])
    def reduce_step(results: list[Any]) -> Any:
        return reduce_fn(results)

    return flow.validate()


#: the input of the starter's first run (``$module``: the starter module's name)
EXAMPLE = '["$module.py"]'

STARTER = '''\
"""Map-reduce over URLs or files, from `pypgflow new map_reduce`: one durable task per
source (retried on its own), then the reduce.

    pypgflow migrate --app $module:app
    pypgflow worker $module:app
    pypgflow start $module:app map_reduce --input '["$module.py", "https://example.com/"]' --wait
"""

from typing import Any

from pypgflow import App
from pypgflow.templates import map_reduce_workflow
from pypgflow.templates.map_reduce import read_source

# PYPGFLOW_DATABASE_URL if set, else the SQLite file pypgflow.db in the working directory.
app = App()


def mapper(source: str) -> dict[str, Any]:
    text = read_source(source)  # a URL's body or a file's text
    return {"source": source, "lines": text.count("\\n"), "words": len(text.split())}


def reducer(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sources": len(results),
        "lines": sum(r["lines"] for r in results),
        "words": sum(r["words"] for r in results),
    }


flow = app.register(map_reduce_workflow(mapper, reducer))
'''
