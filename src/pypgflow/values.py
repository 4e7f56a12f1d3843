"""Typed values: what steps may take and return beyond JSON's own types, stored as JSON.

A ``datetime``, ``date``, ``time``, ``Decimal``, ``UUID``, ``Enum``, dataclass or pydantic model
is stored as its JSON form (:func:`json_form`: ISO 8601 text, the decimal's digits as text, the
enum's value, the fields as an object). Storage stays JSON: nothing is pickled, nothing names a
class. Reading gives JSON back; a step parameter annotated with such a type receives that type,
rebuilt by the decoder :func:`decoder_for` made for the annotation when the step was declared.
Values that are already of the type pass through, as they do in the in-process executor.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
import uuid
from collections import abc
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

Decoder = Callable[[Any], Any]

#: the sequence annotations whose items are decoded, and the type each one is given as
_SEQUENCES: dict[Any, type] = {
    list: list,
    tuple: tuple,
    abc.Sequence: list,
    abc.Collection: list,
    abc.Iterable: list,
}


def json_form(value: Any) -> Any:
    """The JSON form of a typed value (the ``default`` of the JSON encoder); TypeError naming
    the type for anything else."""
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact, where a float would round
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if dump is not None and hasattr(type(value), "model_fields"):  # a pydantic model
        return dump(mode="json")
    raise TypeError(
        f"a value of type {type(value).__qualname__} is not JSON, nor a type pypgflow stores as "
        "JSON (datetime, date, time, Decimal, UUID, Enum, dataclass, pydantic model)"
    )


def decoder_for(annotation: Any) -> Decoder | None:
    """The function that makes a value of the ``annotation``'s type from its JSON form, or None
    when the JSON value is already what the annotation asks for (plain types, no annotation)."""
    if annotation is None or annotation is Any or isinstance(annotation, str):
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = decoder_for(members[0]) if len(members) == 1 else None
        return None if inner is None else _optional(inner)
    if origin in _SEQUENCES:
        args = typing.get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return None  # a tuple of fixed shape: its items stay as stored
        inner = decoder_for(args[0]) if args else None
        return None if inner is None else _each(inner, _SEQUENCES[origin])
    if origin is dict or origin is abc.Mapping:
        args = typing.get_args(annotation)
        inner = decoder_for(args[1]) if len(args) == 2 else None
        return None if inner is None else _values(inner)
    if not isinstance(annotation, type):
        return None
    return _decoder_of_class(annotation)


def _decoder_of_class(cls: type) -> Decoder | None:
    if issubclass(cls, dt.datetime):
        return _parsed(cls, dt.datetime.fromisoformat)
    if issubclass(cls, dt.date):
        return _parsed(cls, dt.date.fromisoformat)
    if issubclass(cls, dt.time):
        return _parsed(cls, dt.time.fromisoformat)
    if issubclass(cls, Decimal):
        return _parsed(cls, lambda v: Decimal(str(v)) if isinstance(v, float) else Decimal(v))
    if issubclass(cls, uuid.UUID):
        return _parsed(cls, uuid.UUID)
    if issubclass(cls, Enum):
        return _parsed(cls, cls)
    if dataclasses.is_dataclass(cls):
        return _dataclass_decoder(cls)
    validate = getattr(cls, "model_validate", None)
    if validate is not None and hasattr(cls, "model_fields"):  # a pydantic model
        return _parsed(cls, validate)
    return None


def _parsed(cls: type, parse: Callable[[Any], Any]) -> Decoder:
    def decode(value: Any) -> Any:
        if isinstance(value, cls) or value is None:
            return value
        try:
            return parse(value)
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise ValueError(f"cannot make a {cls.__qualname__} of {value!r}: {exc}") from exc

    return decode


def _dataclass_decoder(cls: type) -> Decoder:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # annotations that cannot be resolved: the fields stay as stored
        hints = {}
    fields = {f.name: decoder_for(hints.get(f.name)) for f in dataclasses.fields(cls) if f.init}

    def decode(value: Any) -> Any:
        if isinstance(value, cls) or value is None:
            return value
        if not isinstance(value, dict):
            raise ValueError(f"cannot make a {cls.__qualname__} of {value!r}: not an object")
        unknown = set(value) - set(fields)
        if unknown:
            raise ValueError(
                f"cannot make a {cls.__qualname__}: no field {', '.join(sorted(map(str, unknown)))}"
            )
        kwargs = {
            name: (item if fields[name] is None else fields[name](item))  # type: ignore[misc]
            for name, item in value.items()
        }
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"cannot make a {cls.__qualname__}: {exc}") from exc

    return decode


def _optional(inner: Decoder) -> Decoder:
    return lambda value: None if value is None else inner(value)


def _each(inner: Decoder, kind: type) -> Decoder:
    def decode(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError(f"cannot make a list of {value!r}")
        return kind(inner(item) for item in value)

    return decode


def _values(inner: Decoder) -> Decoder:
    def decode(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"cannot make a mapping of {value!r}")
        return {key: inner(item) for key, item in value.items()}

    return decode
