"""Outbox pruning, and real Celery processes (worker, beat) on the real Redis broker."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from datetime import timedelta
from functools import partial

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from outbox.models import OutboxMessage
from outbox.retention import prune_published
from outbox.tasks import prune_published_outbox
from tests.support.processes import AppProcess, database_url, process_env
from tests.support.waiting import wait_for

State = OutboxMessage.State


def outbox_rows(state: str, count: int, published_days_ago: float | None = None) -> set[int]:
    published_at = (
        timezone.now() - timedelta(days=published_days_ago)
        if published_days_ago is not None
        else None
    )
    rows = OutboxMessage.objects.bulk_create(
        OutboxMessage(
            event_id=uuid.uuid4(),
            topic="t",
            key="k",
            value=b"{}",
            lane=0,
            state=state,
            published_at=published_at,
        )
        for _ in range(count)
    )
    return {row.pk for row in rows}


def remaining(ids: set[int]) -> set[int]:
    return set(OutboxMessage.objects.filter(pk__in=ids).values_list("pk", flat=True))


@pytest.fixture
def outbox_mix() -> tuple[set[int], set[int]]:
    """Rows past retention (to prune) and rows every prune must keep."""
    retention = settings.OUTBOX_RETENTION_DAYS
    expired = outbox_rows(State.PUBLISHED, 5, published_days_ago=retention + 1)
    kept = (
        outbox_rows(State.PUBLISHED, 2, published_days_ago=retention - 1)
        | outbox_rows(State.PENDING, 2)
        | outbox_rows(State.PARKED, 2)
    )
    return expired, kept


@pytest.mark.django_db
def test_prune_deletes_only_published_rows_past_retention_in_batches(outbox_mix, caplog):
    expired, kept = outbox_mix
    with caplog.at_level(logging.INFO, logger="outbox.retention"):
        result = prune_published(batch_size=2)
    assert (result.deleted, result.batches, result.complete) == (5, 3, True)
    assert remaining(expired) == set()
    assert remaining(kept) == kept
    assert "deleted 5 published rows" in caplog.text
    assert "in 3 batch(es)" in caplog.text


@pytest.mark.django_db
def test_prune_stops_after_max_batches_and_says_so(outbox_mix, caplog):
    expired, _ = outbox_mix
    result = prune_published(batch_size=2, max_batches=2)
    assert (result.deleted, result.complete) == (4, False)
    assert len(remaining(expired)) == 1
    assert "stopped after 2 batches" in caplog.text


# --- real processes ----------------------------------------------------------------------


def succeeded(worker: AppProcess, task: str) -> bool:
    return re.search(rf"Task {re.escape(task)}\[[^]]+\] succeeded", worker.log()) is not None


def start_celery(tmp_path, *args: str, **env: str) -> AppProcess:
    """A real worker on this run's queue (tests.settings), against the test database."""
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo"]
    argv += ["--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    argv += ["--hostname", f"ops-{uuid.uuid4().hex[:6]}@%h", *args]
    environment = {
        **process_env(database_url(connection.settings_dict)),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    worker = AppProcess("celery", argv, environment, tmp_path / "celery.log").start()
    wait_for(lambda: " ready." in worker.log() or not worker.alive, 60, "the worker")
    assert worker.alive, worker.log()
    return worker


@pytest.fixture
def celery_worker(tmp_path):
    started: list[AppProcess] = []

    def start(*args: str, **env: str) -> AppProcess:
        started.append(start_celery(tmp_path, *args, **env))
        return started[-1]

    yield start
    for worker in started:
        assert worker.terminate(30) == 0, worker.log()
    # The broker is shared: leave no queue or binding of this run behind.
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    leftovers = [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    broker.delete(*leftovers)


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_prune_task_from_the_redis_broker(celery_worker, outbox_mix):
    expired, kept = outbox_mix
    worker = celery_worker()
    assert settings.CELERY_TASK_DEFAULT_QUEUE in worker.log()  # this run's own queue

    prune_published_outbox.delay(batch_size=2)

    wait_for(lambda: not remaining(expired), 30, "the worker to prune")
    assert remaining(kept) == kept
    wait_for(lambda: "deleted 5 published rows" in worker.log(), 10, "the prune log line")


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.django_db(transaction=True)
def test_beat_schedules_the_periodic_jobs_on_a_real_worker(celery_worker, outbox_mix, tmp_path):
    expired, kept = outbox_mix
    worker = celery_worker(
        "--beat",
        "--schedule",
        str(tmp_path / "beat-schedule"),
        OUTBOX_PRUNE_INTERVAL_SECONDS="1",
        DASHBOARD_RECONCILE_INTERVAL_SECONDS="1",
        IDEMPOTENCY_KEY_PRUNE_INTERVAL_SECONDS="1",
    )
    # The schedule names its tasks by string: the worker must know every one of them.
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert f". {entry['task']}" in worker.log()

    wait_for(lambda: not remaining(expired), 30, "beat to send the prune")
    assert remaining(kept) == kept
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        wait_for(partial(succeeded, worker, entry["task"]), 30, f"{name} to run")
