"""JSON in and out of storage: inputs and outputs are JSON, never pickled.

Values are encoded once, where they are produced, and travel as JSON text to the database.
"""

from __future__ import annotations

import json
from typing import Any

from pypgflow.errors import SerializationError


def dumps(value: Any, *, what: str) -> str:
    """``value`` as compact JSON text; ``what`` names it in the error (e.g. "the input of run X")."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from exc


def loads(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)


def join_array(texts: list[str]) -> str:
    """A JSON array made of already-encoded elements (no decoding and re-encoding)."""
    return "[" + ",".join(texts) + "]"


def join_object(items: dict[str, str]) -> str:
    """A JSON object whose values are already-encoded JSON texts."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items.items()) + "}"
