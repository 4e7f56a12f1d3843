"""JSON in and out of storage: inputs and outputs are JSON, never pickled (typed values such as
datetimes and dataclasses are stored in their JSON form: see :mod:`pypgflow.values`).

Values are encoded once, where they are produced, and travel as JSON text to the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from pypgflow.errors import InvalidArgument, SerializationError
from pypgflow.values import json_form

#: one encoder for every value (json.dumps with options would make one per call)
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=json_form
)

# An escaped NUL character: ``\u0000`` preceded by an even number of backslashes.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def dumps(value: Any, *, what: str | Callable[[], str]) -> str:
    """``value`` as compact JSON text; ``what`` names it in the error (e.g. "the input of run X"),
    or makes that name when an error needs it (a batch's inputs spare the formatting).

    Besides what JSON itself refuses (sets, dates, NaN, ...), strings must be valid Unicode
    (no lone surrogates) without the NUL character, which PostgreSQL cannot store in JSON: such
    values are refused here, where they are produced, rather than by the database later.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{_name(what)} is not JSON-serializable: {exc}") from exc
    except RecursionError:  # a self-referencing or absurdly deep value
        raise SerializationError(
            f"{_name(what)} is not JSON-serializable: it is nested too deeply"
        ) from None
    if "{" in text and not _string_keys(value):  # json.dumps would make {1: 2} {"1": 2}
        path, key = _non_string_key(value)
        raise SerializationError(
            f"{_name(what)} is not JSON: the key {key!r} (of type {type(key).__name__}) of the "
            f"object at {path} is not a string (JSON's keys are strings: convert it first)"
        )
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"{_name(what)} is not storable: a string holds a lone surrogate "
                f"({text[exc.start : exc.end]!r}), which is not valid Unicode"
            ) from None
    if "\\u0000" in text and _ESCAPED_NUL.search(text):
        raise SerializationError(
            f"{_name(what)} is not storable: a string holds the NUL character (\\u0000), which "
            "PostgreSQL cannot store in JSON"
        )
    return text


def check_text(text: str, what: str) -> str:
    """``text`` unchanged if it is a string a database can store, else
    InvalidArgument naming ``what``: the NUL character (PostgreSQL's text cannot hold it) and
    lone surrogates (not valid Unicode, so not UTF-8) are refused on every engine alike."""
    if "\x00" in text:
        raise InvalidArgument(f"{what} must not contain the NUL character (\\x00), got {text!r}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(
                f"{what} must be valid Unicode, got {text!r} (it holds a lone surrogate)"
            ) from None
    return text


def _string_keys(value: Any) -> bool:
    """Whether every dict in ``value`` (JSON-encodable already) has string keys only."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                return False
            if isinstance(inner, _CONTAINERS) and not _string_keys(inner):
                return False
    elif isinstance(value, list | tuple):
        for inner in value:
            if isinstance(inner, _CONTAINERS) and not _string_keys(inner):
                return False
    return True


_CONTAINERS = (dict, list, tuple)


def _non_string_key(value: Any) -> tuple[str, Any]:
    """Where a key that is not a string is (as ``$["a"][0]``), and that key."""
    found: list[tuple[Any, str]] = [(value, "$")]
    while found:
        item, path = found.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    return path, key
                found.append((inner, f"{path}[{json.dumps(key, ensure_ascii=False)}]"))
        elif isinstance(item, list | tuple):
            found.extend((inner, f"{path}[{index}]") for index, inner in enumerate(item))
    raise AssertionError("no key that is not a string")  # pragma: no cover


def _name(what: str | Callable[[], str]) -> str:
    return what if isinstance(what, str) else what()


#: the largest exponent a float's JSON text has (Python writes at most 1.7976931348623157e+308)
_MAX_EXPONENT = 308


def stored_number(token: str) -> float | int:
    """A JSON number with a fraction or an exponent, as PostgreSQL's jsonb gives it back, so that
    both engines return the same values: jsonb stores a number as its exact decimal, written
    with the fractional digits its text had once the exponent is applied. So a text with an
    exponent and no fractional digits left (``1e+20``, ``1.5e+16``) comes back an integer;
    ``-0.0`` comes back ``0.0`` (jsonb has no negative zero); any other number keeps its value.
    Called only for such tokens, never for integers (json.loads' ``parse_float``)."""
    if "e" in token or "E" in token:
        mantissa, _, exponent = token.lower().partition("e")
        if len(mantissa.partition(".")[2]) <= int(exponent) <= _MAX_EXPONENT:
            return int(Decimal(token))
    return float(token) or 0.0  # -0.0 is 0.0


#: the decoder of stored JSON (one, since json.loads with options makes one per call)
_DECODER = json.JSONDecoder(parse_float=stored_number)


def loads(text: str | bytes | None) -> Any:
    """Stored JSON text, decoded as PostgreSQL's jsonb would give it back (see stored_number)."""
    if text is None:
        return None
    return _DECODER.decode(text if isinstance(text, str) else text.decode())


class DecodedOnRead(Mapping[str, Any]):
    """A stored JSON object decoded at its first read, each instance its own copy. The elements
    of a map share their step's dependency outputs as one text: each element decodes them only
    if it reads them (a map's function never does, its condition may), and never shares the
    values with another element, which might change them."""

    __slots__ = ("_text", "_value")

    def __init__(self, text: str) -> None:
        self._text = text
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            self._value = loads(self._text) or {}
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


def outputs_by_step(
    rows: Iterable[tuple[str, str, str | None]],
) -> Callable[[str, str], Mapping[str, Any]]:
    """From claimed rows' (run id, step, dependency outputs text or None), where a claim sends
    a step's text with one of its tasks only: each task's outputs, decoded on read."""
    texts: dict[tuple[str, str], str] = {}
    for run_id, step, text in rows:
        if text is not None:
            texts.setdefault((run_id, step), text)

    def outputs(run_id: str, step: str) -> Mapping[str, Any]:
        text = texts.get((run_id, step))
        return {} if text is None else DecodedOnRead(text)

    return outputs


def same_json(a: str | None, b: str | None) -> bool:
    """Whether two JSON texts hold the same value, whatever their spacing and key order (a
    database may store an object's keys in an order of its own)."""
    if a == b:
        return True
    return _canonical(loads(a)) == _canonical(loads(b))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def join_array(texts: list[str]) -> str:
    """A JSON array made of already-encoded elements (no decoding and re-encoding)."""
    return "[" + ",".join(texts) + "]"


def join_object(items: dict[str, str]) -> str:
    """A JSON object whose values are already-encoded JSON texts."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items.items()) + "}"
