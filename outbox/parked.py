"""What an operator can do with parked rows: send them again, or give them up."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import QuerySet

from outbox import wakeup
from outbox.models import OutboxMessage

logger = logging.getLogger(__name__)


def parked_retry(*, messages: QuerySet[OutboxMessage]) -> int:
    """Make parked rows pending again with a fresh attempt budget; the relay picks them up."""
    with transaction.atomic():
        retried = messages.filter(state=OutboxMessage.State.PARKED).update(
            state=OutboxMessage.State.PENDING, attempts=0, last_error=""
        )
        wakeup.notify_relays_after_commit()
    logger.info("outbox: %d parked rows queued for another try", retried)
    return retried


def parked_discard(*, messages: QuerySet[OutboxMessage]) -> int:
    """Delete parked rows for good: their events are never published, and the later events
    of their keys, which waited behind them, go out next."""
    with transaction.atomic():
        discarded, _ = messages.filter(state=OutboxMessage.State.PARKED).delete()
        wakeup.notify_relays_after_commit()
    logger.warning("outbox: %d parked rows discarded; their events will never be sent", discarded)
    return discarded
