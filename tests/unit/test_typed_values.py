"""Typed values: stored in their JSON form, given back as the type a parameter asks for."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import threading
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest

from pypgflow import SerializationError, Workflow, WorkflowFailed, execute
from pypgflow.serialization import dumps, loads
from pypgflow.values import decoder_for


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    price: Decimal


@dataclasses.dataclass(frozen=True)
class Order:
    id: uuid.UUID
    placed_at: dt.datetime
    due: dt.date
    tier: Tier
    lines: list[Line]
    notes: dict[str, dt.time] = dataclasses.field(default_factory=dict)
    coupon: Decimal | None = None


class Customer(pydantic.BaseModel):
    name: str
    since: dt.date
    credit: Decimal


ORDER = Order(
    id=uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057"),
    placed_at=dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    due=dt.date(2026, 12, 24),
    tier=Tier.GOLD,
    lines=[Line("tea", Decimal("3.10")), Line("cup", Decimal("12.00"))],
    notes={"deliver": dt.time(17, 45)},
)


def test_typed_values_are_stored_in_their_json_form() -> None:
    stored = loads(dumps(ORDER, what="the order"))
    assert stored == {
        "id": "01890a5d-ac96-774b-bcce-b302099a8057",
        "placed_at": "2026-12-02T09:30:00+02:00",
        "due": "2026-12-24",
        "tier": "gold",
        "lines": [{"sku": "tea", "price": "3.10"}, {"sku": "cup", "price": "12.00"}],
        "notes": {"deliver": "17:45:00"},
        "coupon": None,
    }
    customer = Customer(name="Ada", since=dt.date(2020, 1, 2), credit=Decimal("0.10"))
    assert loads(dumps(customer, what="x")) == {
        "name": "Ada",
        "since": "2020-01-02",
        "credit": "0.10",
    }


def test_an_annotation_decodes_the_json_form_back_to_its_type() -> None:
    decode = decoder_for(Order)
    assert decode is not None
    assert decode(loads(dumps(ORDER, what="x"))) == ORDER
    assert decode(ORDER) is ORDER  # already of the type: as it is
    customer = decoder_for(Customer)
    assert customer is not None
    assert customer({"name": "Ada", "since": "2020-01-02", "credit": "0.10"}) == Customer(
        name="Ada", since=dt.date(2020, 1, 2), credit=Decimal("0.10")
    )
    optional = decoder_for(dt.datetime | None)
    assert optional is not None
    assert optional(None) is None
    assert optional("2026-01-01T00:00:00") == dt.datetime(2026, 1, 1)
    many = decoder_for(dict[str, list[Decimal]])
    assert many is not None
    assert many({"a": ["1.5", 2]}) == {"a": [Decimal("1.5"), Decimal(2)]}


@pytest.mark.parametrize(
    "annotation", [None, Any, int, str, dict, list, dict[str, int], list[str], "Order", object]
)
def test_plain_annotations_cost_nothing(annotation: Any) -> None:
    assert decoder_for(annotation) is None


def test_what_cannot_be_stored_is_named_with_its_type() -> None:
    with pytest.raises(SerializationError, match=r"the output of step 'x'.*type set"):
        dumps({"tags": {"a", "b"}}, what="the output of step 'x'")
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="type lock"):
        dumps(lock, what="the input")


flow = Workflow("typed")


@flow.step
def total(input: Order) -> Decimal:
    assert isinstance(input, Order)
    return sum((line.price for line in input.lines), Decimal(0))


@flow.step
def doubled(total: Decimal) -> dict[str, Any]:
    return {"total": total * 2, "at": dt.date(2026, 1, 1)}


def test_a_step_receives_its_annotated_types_in_the_executor_too() -> None:
    assert execute(flow, ORDER) == {"total": Decimal("30.20"), "at": dt.date(2026, 1, 1)}
    # the JSON form of the input is decoded for the step as well
    stored = loads(dumps(ORDER, what="x"))
    assert execute(flow, stored)["total"] == Decimal("30.20")


def test_a_value_that_does_not_fit_the_annotation_names_the_step_and_parameter() -> None:
    with pytest.raises(WorkflowFailed) as caught:
        execute(flow, {"id": "not a uuid"}, retry="step", max_attempts=3)
    assert isinstance(caught.value.__cause__, SerializationError)
    assert "step 'total', parameter 'input'" in str(caught.value)
    assert caught.value.attempts == 1  # the same value would fail again: not retried
