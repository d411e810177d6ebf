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


def parse_count_id(count_id: uuid.UUID | str) -> uuid.UUID:
    """The id as a UUID; anything that is not one names no count."""
    if isinstance(count_id, uuid.UUID):
        return count_id
    try:
        return uuid.UUID(str(count_id))
    except ValueError:
        raise Count.DoesNotExist(f"No count with id {count_id!r}.") from None
