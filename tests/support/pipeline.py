"""The `pipeline` fixture (a pytest plugin, see conftest.py): an isolated event pipeline per test.

Each test gets its own topics, consumer group and Redis keys (a fresh run id, which
subprocesses inherit through COUNTSTREAM_TEST_RUN), so tests never see each other's events;
its topics and keys are deleted afterwards.
`relay_pending()` publishes the outbox with the real relay; `publish_pending()` is a
stand-in that moves rows to Kafka byte for byte, for read-side tests inside a transaction.
The `kafka_producer` and `kafka_consumer_factory` fixtures give plain clients (consumers read
topics from the start).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from django.conf import settings
from django.utils import timezone
from redis import Redis

from counts.events import TOPICS
from counts.models import Count
from dashboard import read_model
from dashboard.consuming.loop import DashboardConsumer
from infra.kafka import admin_client, client_config
from infra.redis import redis_client
from infra.topics import ensure_topics, managed_topics, topic_name
from outbox.models import OutboxMessage
from outbox.relay import Relay, RelayOptions
from tests.support.waiting import wait_for


def database_truth() -> dict[str, tuple[str, int]]:
    return {str(c.id): (c.name, c.value) for c in Count.objects.all()}


def consume_within(seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """`consume --once` in this thread until caught up; stopped once `until()` holds, or
    after `seconds` (a consumer still retrying)."""
    consumer = DashboardConsumer(once=True)
    finished = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + seconds
        while not finished.wait(0.05):
            if until() or time.monotonic() >= deadline:
                consumer.stop()
                return

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        consumer.run()
    finally:
        finished.set()
        watchdog.join()


def read_model_state(client: Redis | None = None) -> dict[str, tuple[str, int]]:
    counts = read_model.snapshot(client).counts
    return {count_id: (entry["name"], entry["value"]) for count_id, entry in counts.items()}


def earliest_consumer(*topics: str, group: str | None = None) -> Consumer:
    """A consumer of `topics` from their start, in a fresh group unless `group` is given;
    it commits nothing by itself. The caller closes it."""
    consumer = Consumer(
        client_config(
            **{
                "group.id": group or f"{settings.KAFKA_TOPIC_PREFIX}{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe(list(topics))
    return consumer


@dataclass
class Pipeline:
    run_id: str

    @property
    def topics(self) -> list[str]:
        return [topic_name(t) for t in managed_topics()]

    @property
    def env(self) -> dict[str, str]:
        """For processes the test starts: the same topics, consumer group and Redis keys."""
        return {"COUNTSTREAM_TEST_RUN": self.run_id}

    def publish_pending(self) -> int:
        """Publish the pending outbox rows in id order, exactly as stored, and mark them: a
        stand-in for the relay, which sees committed rows only, in tests that run inside a
        transaction. A test that claims the pipeline uses `relay_pending()`."""
        rows = list(OutboxMessage.objects.filter(state=OutboxMessage.State.PENDING))
        self.produce_raw(
            (row.topic, row.key.encode(), bytes(row.value), list(row.headers.items()))
            for row in rows
        )
        OutboxMessage.objects.filter(id__in=[r.id for r in rows]).update(
            state=OutboxMessage.State.PUBLISHED, published_at=timezone.now()
        )
        return len(rows)

    def relay_pending(self) -> None:
        """Publish the pending outbox rows with the real relay, as `relay --once` does."""
        assert Relay(RelayOptions(once=True)).run() == 0

    def produce_raw(self, messages, **config) -> None:
        """Produce (topic, key, value, headers) tuples as another client would; `config`
        adds librdkafka settings of that client."""
        producer = Producer(client_config(**{"partitioner": "murmur2_random", **config}))
        for topic, key, value, headers in messages:
            producer.produce(topic, key=key, value=value, headers=headers)
        assert producer.flush(10) == 0

    def consume_once(self) -> None:
        DashboardConsumer(once=True).run()

    def read_all(self, logical_topic: str, expected: int, timeout: float = 20) -> list[Message]:
        consumer = earliest_consumer(topic_name(logical_topic))
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while len(messages) < expected and time.monotonic() < deadline:
                messages += [m for m in consumer.consume(100, timeout=0.2) if not m.error()]
        finally:
            consumer.close()
        return messages

    def lag(self) -> int:
        """Events on the count topics that the dashboard group has not committed yet."""
        admin = admin_client()
        partitions = [
            TopicPartition(topic_name(t), p)
            for t in TOPICS
            for p in range(settings.KAFKA_TOPIC_PARTITIONS)
        ]
        request = ConsumerGroupTopicPartitions(settings.KAFKA_CONSUMER_GROUP, partitions)
        group = settings.KAFKA_CONSUMER_GROUP
        committed = admin.list_consumer_group_offsets([request])[group].result()
        probe = Consumer(client_config(**{"group.id": f"{group}-probe"}))
        try:
            ends = [probe.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
        finally:
            probe.close()
        done = [max(tp.offset, 0) for tp in committed.topic_partitions]
        return sum(end - offset for end, offset in zip(ends, done, strict=True))


KAFKA_DEFAULT_MAX_MESSAGE_BYTES = "1048588"
# A poison message (not JSON) that no compression brings under a `max.message.bytes` of 512.
POISON_OVER_512_BYTES = b"\xff not json" + random.Random(7).randbytes(4000)


def set_max_message_bytes(topic: str, value: str) -> None:
    """Set the topic's `max.message.bytes` and wait until the broker applies it."""
    admin = admin_client()
    entry = ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result()

    def applied() -> bool:
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        configs = next(iter(described.values())).result()
        return configs["max.message.bytes"].value == value

    wait_for(applied, 20, f"max.message.bytes={value} on {topic}")


@pytest.fixture
def kafka_producer() -> Iterator[Producer]:
    producer = Producer(client_config())
    yield producer
    producer.flush(10)


@pytest.fixture
def kafka_consumer_factory() -> Iterator[Callable[..., Consumer]]:
    """Build consumers with `earliest_consumer`; all are closed at the end of the test."""
    consumers: list[Consumer] = []

    def make(*topics: str, group: str | None = None) -> Consumer:
        consumers.append(earliest_consumer(*topics, group=group))
        return consumers[-1]

    yield make
    for consumer in consumers:
        consumer.close()


@pytest.fixture
def pipeline(settings) -> Iterator[Pipeline]:
    run_id = f"{os.environ['COUNTSTREAM_TEST_RUN']}{uuid.uuid4().hex[:6]}"
    settings.KAFKA_TOPIC_PREFIX = f"test.{run_id}."
    settings.KAFKA_CONSUMER_GROUP = f"test.{run_id}.dashboard"
    settings.CACHE_KEY_PREFIX = f"test:{run_id}"
    stream = Pipeline(run_id)
    ensure_topics(managed_topics())
    yield stream
    admin = admin_client()  # must outlive its futures
    for future in admin.delete_topics(stream.topics, operation_timeout=30).values():
        future.result()
    client = redis_client()
    keys = list(client.scan_iter(match=f"{settings.CACHE_KEY_PREFIX}:*", count=1000))
    for start in range(0, len(keys), 1000):  # one call per 1000: each must end in 0.5 s
        client.unlink(*keys[start : start + 1000])
