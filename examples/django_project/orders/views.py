"""``POST /orders/`` saves an order and starts its run in one transaction; ``GET
/orders/ID/`` shows the order with where its run is."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from orders.flows import PRICES, fulfil_order
from orders.models import Order
from pypgflow.integrations.django import get_app, start_in_transaction


@csrf_exempt  # an API for scripts, in an example: a real one authenticates its callers
@require_POST
def place_order(request: HttpRequest) -> HttpResponse:
    try:
        body = json.loads(request.body)
        sku, quantity = str(body["sku"]), int(body["quantity"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'expected {"sku": "book", "quantity": 2}'}, status=400)
    if sku not in PRICES or quantity < 1:
        return JsonResponse({"error": f"we sell {', '.join(PRICES)}, one or more"}, status=400)
    with transaction.atomic():
        order = Order.objects.create(sku=sku, quantity=quantity)
        # Written in this transaction: if anything below fails, neither the order nor its run
        # exists, and no worker ever runs it.
        run = start_in_transaction(
            fulfil_order, {"order": order.id, "sku": sku, "quantity": quantity}
        )
        order.run_id = run.id
        order.save(update_fields=["run_id"])
    return JsonResponse({"order": order.id, "run_id": run.id}, status=202)


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(Order, id=order_id)
    run = get_app().get_run(str(order.run_id))
    return JsonResponse(
        {
            "order": order.id,
            "sku": order.sku,
            "quantity": order.quantity,
            "run_id": run.id,
            "status": run.status.value,
            "receipt": run.output,
        }
    )
