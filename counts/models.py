"""The domain: named counters with a 64-bit value."""

import uuid

from django.db import models

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class Count(models.Model):
    """A named counter. Change it only through `counts.services`, which writes its events."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    value = models.BigIntegerField(default=0)
    # Grows by one on every change; consumers use it to drop stale or replayed events.
    version = models.PositiveBigIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
