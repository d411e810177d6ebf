"""Periodic outbox jobs, run by the Celery worker and scheduled by beat (CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from outbox.retention import prune_published


@shared_task(name="outbox.tasks.prune_published_outbox", ignore_result=True)
def prune_published_outbox(**limits: int) -> int:
    """Prune published rows past OUTBOX_RETENTION_DAYS; returns how many were deleted.

    `limits` (batch_size, max_batches) default to prune_published's own."""
    return prune_published(**limits).deleted
