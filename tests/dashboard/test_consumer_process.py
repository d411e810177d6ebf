"""`manage.py consume` as real processes: rebalances, SIGTERM, metrics and a Redis outage."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from prometheus_client.parser import text_string_to_metric_families

from counts import services
from counts.models import Count
from dashboard import read_model
from infra.kafka import admin_client
from outbox.models import OutboxMessage
from scripts.service_tools import free_ports
from tests.support.pipeline import database_truth, read_model_state
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stack]

EVENTS = "countstream_consumer_events"


def metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics").text


def events_processed(port: int) -> float:
    """The events a consumer process has applied, from its own metrics."""
    (family,) = [f for f in text_string_to_metric_families(metrics(port)) if f.name == EVENTS]
    return sum(sample.value for sample in family.samples if sample.name == f"{EVENTS}_total")


def assignments() -> list[set[tuple[str, int]]]:
    """The partitions of each member of the dashboard group, as the group coordinator has it."""
    group = settings.KAFKA_CONSUMER_GROUP
    admin = admin_client()  # must outlive its futures
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    return [
        {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    ]


def test_two_consumers_share_the_work_commit_what_they_applied_and_exit_zero_on_sigterm(
    pipeline, app_stack
):
    first_port, second_port = free_ports(2)
    first = app_stack("consume", "--metrics-port", str(first_port))
    counts = [services.count_create(name=f"p{i}", value=i + 1) for i in range(6)]
    pipeline.publish_pending()
    wait_for(lambda: read_model_state() == database_truth(), 30, "the first consumer")
    # The group's committed offsets themselves (not the log), while the consumer runs.
    wait_for(lambda: pipeline.lag() == 0, 30, "the first consumer's commit")

    wait_for(lambda: "countstream_consumer_lag{" in metrics(first_port), 10, "the lag gauges")
    for name in ("events_total", "event_age_seconds_count", "dead_letters"):
        assert f"countstream_consumer_{name}" in metrics(first_port)

    second = app_stack("consume", "--metrics-port", str(second_port))
    shared = lambda: len(members := assignments()) == 2 and all(members)  # noqa: E731
    wait_for(shared, 60, "the two consumers to share the partitions")
    for count in counts:
        services.count_increment(count_id=count.id, delta=10)
    pipeline.publish_pending()
    wait_for(lambda: read_model_state() == database_truth(), 30, "both consumers")
    wait_for(lambda: pipeline.lag() == 0, 30, "both consumers' commits")

    # Each event was applied once: the partitions that moved were picked up at the offsets
    # the first consumer had committed, not read again from an older one.
    applied = events_processed(first_port) + events_processed(second_port)
    assert applied == OutboxMessage.objects.count()
    assert (first.terminate(), second.terminate()) == (0, 0)


def test_a_starting_consumer_shows_every_count_of_the_database_at_once(app_stack):
    # Counts whose events are long consumed (or a Redis that lost the read model): the
    # page must not wait for each count's next write to show it.
    for i in range(3):
        services.count_create(name=f"existing-{i}", value=i)
    consumer = app_stack("consume", "--metrics-port=0")
    wait_for(lambda: read_model_state() == database_truth(), 30, "the read model to catch up")
    assert "caught up at start" in consumer.log()
    assert consumer.terminate() == 0


@pytest.mark.slow
def test_while_redis_is_down_the_consumer_retries_commits_nothing_and_skips_nothing(
    pipeline, app_stack, private_redis
):
    consumer = app_stack("consume", "--metrics-port=0", redis=private_redis.url(15))
    client = redis.Redis.from_url(private_redis.url(15))
    count = services.count_create(name="patient", value=1)
    pipeline.publish_pending()
    wait_for(lambda: read_model_state(client) == database_truth(), 30, "the first event")
    wait_for(lambda: pipeline.lag() == 0, 30, "the first events' commit")

    private_redis.stop()
    for _ in range(3):
        services.count_increment(count_id=count.id, delta=1)
    pipeline.publish_pending()
    wait_for(lambda: "cannot apply a batch" in consumer.log(), 20, "the consumer to retry")
    assert pipeline.lag() == 3  # nothing committed while the effects could not be made

    private_redis.start()  # an empty Redis: the held-back batch must still be applied
    expected = {str(count.id): (str(count.id), 4)}  # the name was in the lost Redis
    wait_for(lambda: read_model_state(client) == expected, 30, "the held-back batch")
    wait_for(lambda: pipeline.lag() == 0, 10, "the commit")
    assert consumer.terminate() == 0


def _random_writes(count_ids: list, seed: int, writes: int = 120) -> None:
    rng = random.Random(seed)
    try:
        for step in range(writes):
            count_id = rng.choice(count_ids)
            if step % 10 == 0:
                services.count_set(count_id=count_id, value=rng.randint(-1000, 1000))
            elif step % 25 == 0:
                services.count_update_info(count_id=count_id, name=f"renamed-{seed}-{step}")
            else:
                services.count_increment(count_id=count_id, delta=rng.randint(-5, 50))
    finally:
        connection.close()  # this thread's connection; the test database is dropped later


@pytest.mark.slow
def test_after_a_burst_of_concurrent_writes_the_dashboard_equals_the_database(app_stack):
    app_stack("relay", "--metrics-port=0")
    app_stack("consume", "--metrics-port=0")
    count_ids = [services.count_create(name=f"burst-{i}").id for i in range(8)]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda seed: _random_writes(count_ids, seed), range(4)))
    services.count_delete(count_id=count_ids[0])
    services.count_create(name="late-comer", value=7)

    wait_for(lambda: read_model_state() == database_truth(), 60, "the dashboard to settle")
    total = Count.objects.aggregate(total=Sum("value"))["total"]
    assert read_model.snapshot().total == total
    assert len(read_model.snapshot().counts) == Count.objects.count() == 8


@pytest.mark.slow
def test_without_kafka_the_consumer_waits_for_it_and_still_exits_zero_on_sigterm(app_stack):
    (dead_port,) = free_ports(1)
    consumer = app_stack("consume", "--metrics-port=0", kafka=f"127.0.0.1:{dead_port}")
    wait_for(lambda: "cannot reach Kafka" in consumer.log(), 30, "the consumer to wait")
    assert consumer.terminate() == 0
