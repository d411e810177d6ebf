"""`manage.py consume` stopped (SIGTERM) while a store it needs is down: it exits 0 without
committing the batch it could not apply, which the next consumer then applies
(docs/caching.md, Failures). Committed offsets are read through the Kafka admin API."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from django.db import connection

from counts import services
from counts.events import COUNT_VALUE_UPDATED
from infra.topics import topic_name
from outbox.models import OutboxMessage
from tests.support.pipeline import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    POISON_OVER_512_BYTES,
    database_truth,
    read_model_state,
    set_max_message_bytes,
)
from tests.support.processes import AppProcess, database_url
from tests.support.proxy import tcp_proxy
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]


def consumer_on(app_processes, pipeline, **stores: str) -> AppProcess:
    return app_processes.spawn("consume", "--metrics-port=0", **pipeline.env, **stores)


def stop_while_retrying(consumer: AppProcess, retry_line: str) -> None:
    wait_for(lambda: retry_line in consumer.log(), 30, f"the consumer to log {retry_line!r}")
    assert consumer.terminate() == 0, consumer.log()


def new_rows(before: int) -> int:
    return OutboxMessage.objects.count() - before


def test_sigterm_while_redis_is_down_commits_nothing_of_the_held_batch(
    pipeline, app_processes, test_database_url, private_redis
):
    stores = {"database_url": test_database_url, "redis": private_redis.url(15)}
    client = redis.Redis.from_url(private_redis.url(15))
    consumer = consumer_on(app_processes, pipeline, **stores)
    count = services.count_create(name="patient", value=1)
    pipeline.relay_pending()
    wait_for(lambda: read_model_state(client) == database_truth(), 30, "the first event")
    wait_for(lambda: pipeline.lag() == 0, 30, "the first event's commit")

    private_redis.stop()
    for _ in range(3):
        services.count_increment(count_id=count.id)
    pipeline.relay_pending()
    stop_while_retrying(consumer, "cannot apply a batch")
    assert pipeline.lag() == 3

    private_redis.start()  # empty: the redelivered batch must be applied in full
    consumer = consumer_on(app_processes, pipeline, **stores)
    wait_for(lambda: read_model_state(client) == database_truth(), 30, "the redelivered batch")
    wait_for(lambda: pipeline.lag() == 0, 30, "its commit")
    assert consumer.terminate() == 0


def test_sigterm_while_postgres_is_unreachable_commits_nothing_of_the_held_batch(
    pipeline, app_processes
):
    server = connection.settings_dict
    with tcp_proxy(server["HOST"], int(server["PORT"])) as proxy:
        url = database_url({**server, "HOST": "127.0.0.1", "PORT": proxy.port})
        consumer = consumer_on(app_processes, pipeline, database_url=url)
        services.count_create(name="known", value=1)
        pipeline.relay_pending()
        wait_for(lambda: read_model_state() == database_truth(), 30, "the first event")
        wait_for(lambda: pipeline.lag() == 0, 30, "the first event's commit")

        proxy.cut()
        before = OutboxMessage.objects.count()
        services.count_create(name="unmet", value=2)  # a count it must look up first
        pipeline.relay_pending()
        stop_while_retrying(consumer, "cannot apply a batch")
        assert pipeline.lag() == new_rows(before) > 0

        proxy.restore()
        consumer = consumer_on(app_processes, pipeline, database_url=url)
        wait_for(lambda: read_model_state() == database_truth(), 30, "the redelivered batch")
        wait_for(lambda: pipeline.lag() == 0, 30, "its commit")
        assert consumer.terminate() == 0


def test_sigterm_while_the_dead_letter_topic_refuses_commits_nothing_of_the_held_batch(
    pipeline, app_processes, test_database_url
):
    dead_letter_topic = topic_name(settings.KAFKA_DEAD_LETTER_TOPIC)
    set_max_message_bytes(dead_letter_topic, "512")
    poison = POISON_OVER_512_BYTES  # too large for the dead-letter topic now
    pipeline.produce_raw([(topic_name(COUNT_VALUE_UPDATED), b"k", poison, None)])
    consumer = consumer_on(app_processes, pipeline, database_url=test_database_url)
    stop_while_retrying(consumer, "cannot dead-letter")
    assert pipeline.lag() == 1

    set_max_message_bytes(dead_letter_topic, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    consumer = consumer_on(app_processes, pipeline, database_url=test_database_url)
    dead = pipeline.read_all(settings.KAFKA_DEAD_LETTER_TOPIC, expected=1)
    assert [(m.value(), dict(m.headers())["dlq_reason"]) for m in dead] == [(poison, b"not-json")]
    wait_for(lambda: pipeline.lag() == 0, 30, "its commit")
    assert consumer.terminate() == 0
