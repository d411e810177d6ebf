"""Periodic outbox jobs, run by the Celery worker and scheduled by beat (CELERY_BEAT_SCHEDULE)."""

from celery import shared_task

from outbox.retention import prune_published


@shared_task(name="outbox.tasks.prune_published_outbox", ignore_result=True)
def prune_published_outbox(batch_size: int = 5_000, max_batches: int = 200) -> int:
    """Prune published rows past OUTBOX_RETENTION_DAYS; returns how many were deleted."""
    return prune_published(batch_size=batch_size, max_batches=max_batches).deleted
