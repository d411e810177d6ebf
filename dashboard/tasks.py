"""Periodic dashboard jobs: run by the Celery worker, scheduled in CELERY_BEAT_SCHEDULE."""

import logging
from datetime import timedelta

from celery import shared_task

from dashboard.services import reconcile_read_model

logger = logging.getLogger(__name__)


@shared_task(name="dashboard.tasks.reconcile_dashboard", ignore_result=True)
def reconcile_dashboard(grace_seconds: float = 30) -> dict[str, int]:
    """Repair drift between the dashboard's read model and the database; log each repair."""
    repairs = reconcile_read_model(grace=timedelta(seconds=grace_seconds))
    for kind, ids in repairs.items():
        if ids:
            logger.warning(
                "dashboard reconcile: %s %d count(s): %s", kind, len(ids), ", ".join(ids)
            )
    if not any(repairs.values()):
        logger.info("dashboard reconcile: read model equals the database")
    return {kind: len(ids) for kind, ids in repairs.items()}
