"""One partition without a leader holds back only its own keys (issue 15, item 6).

A 3-broker cluster, topics with replication 1: killing the leader of one partition leaves
that partition offline while the others work. The relay must go on publishing the keys of
the healthy partitions at once, keep the blocked partition's keys pending, and publish
them in order once the broker is back.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from counts import events
from outbox.models import OutboxMessage
from tests.support.processes import RELAY_TIMING
from tests.support.relay import enqueue_backlog, pending_count, read_back, wait_until_serving
from tests.support.servers import crash_broker
from tests.support.waiting import reporting, wait_for
from tests.system.test_reliability_kafka import audit, create_topics, leader_of, on_cluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]

# Well under librdkafka's message timeout (30 s), which is what a healthy key waited before.
HEALTHY_WITHIN_S = 8


def pending_keys() -> set[str]:
    return set(
        OutboxMessage.objects.filter(state=OutboxMessage.State.PENDING).values_list(
            "key", flat=True
        )
    )


def partitions_of_keys(keys: list[str], bootstrap: str) -> dict[str, int]:
    """Each key's partition on the value topic, as Kafka placed its first event."""
    ids = {str(row.event_id) for row in OutboxMessage.objects.filter(key__in=keys)}
    with on_cluster(bootstrap):
        received = read_back(ids, timeout=30)
    value_topic = f"{settings.KAFKA_TOPIC_PREFIX}{events.COUNT_VALUE_UPDATED}"
    return {r.key: r.partition for r in received if r.topic == value_topic}


def test_a_leaderless_partition_holds_back_only_its_own_keys(start_relay, kafka_cluster):
    bootstrap = kafka_cluster.bootstrap
    create_topics(bootstrap, replication=1)
    value_topic = f"{settings.KAFKA_TOPIC_PREFIX}{events.COUNT_VALUE_UPDATED}"
    relay = start_relay(*RELAY_TIMING, kafka=bootstrap)
    wait_until_serving(relay)

    keys = [f"partition-key-{n}" for n in range(24)]
    enqueue_backlog(keys, per_key=1)
    wait_for(lambda: pending_count() == 0, 30, "the first events")
    partition_of = partitions_of_keys(keys, bootstrap)
    victim = leader_of(bootstrap, value_topic, 0)
    led = {p for p in set(partition_of.values()) if leader_of(bootstrap, value_topic, p) == victim}
    blocked = sorted(k for k in keys if partition_of[k] in led)
    healthy = sorted(k for k in keys if partition_of[k] not in led)
    assert blocked and healthy

    with reporting("kafka-partition-offline") as figures:
        figures.update(blocked_keys=len(blocked), healthy_keys=len(healthy))
        crash_broker(kafka_cluster.nodes[victim - 1])
        killed = time.monotonic()
        enqueue_backlog(blocked, per_key=3)  # in flight or queued when the partition goes offline
        survivors = ",".join(
            f"127.0.0.1:{n.port}" for n in kafka_cluster.nodes if n.node_id != victim
        )
        wait_for(
            lambda: leader_of(survivors, value_topic, 0) == -1,
            30,
            "the partition to go offline",
            0.5,
        )
        figures["offline_after_kill_s"] = round(time.monotonic() - killed, 1)

        enqueue_backlog(healthy + blocked, per_key=2)
        written = time.monotonic()
        wait_for(
            lambda: not pending_keys() & set(healthy),
            HEALTHY_WITHIN_S,
            "the healthy partitions' keys to be published",
        )
        figures["healthy_published_after_write_s"] = round(time.monotonic() - written, 2)
        assert pending_keys() == set(blocked)  # still offline: its keys wait, nothing parked
        assert not OutboxMessage.objects.filter(state=OutboxMessage.State.PARKED).exists()

        kafka_cluster.nodes[victim - 1].start()
        back = time.monotonic()
        wait_for(lambda: pending_count() == 0, 45, "the blocked keys once the broker is back")
        figures["blocked_drained_after_restart_s"] = round(time.monotonic() - back, 2)

        figures.update(audit(list(OutboxMessage.objects.order_by("id")), bootstrap))
        assert figures["lost"] == 0
        assert relay.alive
