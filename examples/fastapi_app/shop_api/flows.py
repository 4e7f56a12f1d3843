"""The shop's workflow: an order is priced, then a receipt is written for it."""

from __future__ import annotations

from typing import Any

from pypgflow import NonRetryable, Workflow

PRICES = {"book": 12, "pen": 2, "mug": 8}

fulfil_order = Workflow("fulfil_order")


@fulfil_order.step
def price(input: dict[str, Any]) -> dict[str, Any]:
    """A sync step (run in the worker's thread pool)."""
    if input["sku"] not in PRICES:
        raise NonRetryable(f"we sell no {input['sku']!r}")
    return {**input, "total": PRICES[input["sku"]] * input["quantity"]}


@fulfil_order.step
async def receipt(price: dict[str, Any]) -> str:
    """An async step (run on the worker's loop: here, the web server's)."""
    return f"{price['quantity']} x {price['sku']}: {price['total']} EUR"
