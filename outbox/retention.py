"""Published outbox rows are kept for OUTBOX_RETENTION_DAYS (to audit and re-send), then pruned.

Deleting runs in bounded batches, each its own short transaction, so pruning a large
backlog never holds locks for long or builds one huge transaction beside the writers.
Pending and parked rows are never pruned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from infra.database import delete_in_batches
from outbox.models import OutboxMessage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    batches: int
    cutoff: datetime
    complete: bool  # False: max_batches was reached and rows past the cutoff remain


def prune_published(
    *,
    older_than: timedelta | None = None,
    batch_size: int = 5_000,
    max_batches: int = 200,
) -> PruneResult:
    """Delete published rows whose publication is older than `older_than` (the setting)."""
    if older_than is None:
        older_than = timedelta(days=settings.OUTBOX_RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    expired = OutboxMessage.objects.filter(
        state=OutboxMessage.State.PUBLISHED, published_at__lt=cutoff
    )
    # Oldest first through the partial index on published_at.
    deleted, batches, complete = delete_in_batches(
        expired.order_by("published_at"), batch_size=batch_size, max_batches=max_batches
    )
    if not complete:
        logger.warning("outbox prune stopped after %d batches; the next run goes on", batches)
    logger.info(
        "outbox prune: deleted %d published rows older than %s in %d batch(es)",
        deleted,
        cutoff.isoformat(timespec="seconds"),
        batches,
    )
    return PruneResult(deleted, batches, cutoff, complete)
