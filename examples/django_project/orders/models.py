from django.db import models


class Order(models.Model):
    """An order, and the run that fulfils it (started in the transaction that saved it)."""

    sku = models.CharField(max_length=40)
    quantity = models.PositiveIntegerField()
    run_id = models.UUIDField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
