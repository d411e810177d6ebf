"""Periodic count jobs, run by the Celery worker and scheduled by beat (CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from counts.idempotency import prune_expired_keys


@shared_task(name="counts.tasks.prune_idempotency_keys", ignore_result=True)
def prune_idempotency_keys(**limits: int) -> int:
    """Delete Idempotency-Keys past IDEMPOTENCY_KEY_RETENTION_HOURS; returns how many.

    `limits` (batch_size, max_batches) default to prune_expired_keys' own."""
    return prune_expired_keys(**limits)
