"""The domain: named counters with a 64-bit value."""

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
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


class IdempotencyKey(models.Model):
    """A write's Idempotency-Key and its first answer, per user (counts.idempotency)."""

    # The unique (user, key) index serves the user lookups too.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    key = models.CharField(max_length=255)
    # sha256 of the request's method, path and body: a replay must be the same request.
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)  # null only while being written
    body = models.TextField(default="")  # JSON text, not jsonb: replays keep the key order
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="counts_idempotency_user_key")
        ]
        # BRIN: keys arrive in created_at order, so the prune's range scan needs only block
        # ranges, and a key's INSERT pays almost nothing for it (a B-tree would cost one more
        # index insert on every keyed write).
        indexes = [BrinIndex(fields=["created_at"], name="counts_idempotency_created")]

    def __str__(self) -> str:
        return self.key


def parse_count_id(count_id: uuid.UUID | str) -> uuid.UUID:
    """The id as a UUID; anything that is not one names no count."""
    if isinstance(count_id, uuid.UUID):
        return count_id
    try:
        return uuid.UUID(str(count_id))
    except ValueError:
        raise Count.DoesNotExist(f"No count with id {count_id!r}.") from None
