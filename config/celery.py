"""The Celery app: Redis as broker, tasks discovered in the Django apps."""

import os
from pathlib import Path

from celery import Celery
from celery.beat import PersistentScheduler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("countstream")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class FolderMakingScheduler(PersistentScheduler):
    """Beat's default scheduler, which first makes the folder of its schedule file: the
    Procfile keeps it in `.local/`, which a checkout reusing running services never gets."""

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()
