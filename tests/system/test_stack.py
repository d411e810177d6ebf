"""The parts are real: PostgreSQL, Redis and an Apache Kafka broker, plus idempotent scripts."""

import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import NewTopic
from django.conf import settings
from django.db import connection
from django_redis import get_redis_connection

from infra.kafka import admin_client
from scripts.kafka_node import KafkaNode
from scripts.services import Postgres, Redis
from tests.support.paths import ROOT

pytestmark = pytest.mark.stack


@pytest.mark.django_db
def test_database_is_postgresql():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert cursor.fetchone()[0].startswith("PostgreSQL")


def test_redis_answers():
    client = get_redis_connection("default")
    assert client.ping()
    key = f"{settings.CACHE_KEY_PREFIX}:probe"
    client.set(key, "1", ex=10)
    assert client.get(key) == b"1"


def test_kafka_round_trip_with_committed_offset(kafka_producer, kafka_consumer_factory):
    topic = f"{settings.KAFKA_TOPIC_PREFIX}probe-{uuid.uuid4().hex[:8]}"
    admin = admin_client()
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    kafka_producer.produce(topic, key=b"k", value=b"hello")
    assert kafka_producer.flush(10) == 0

    group = f"{settings.KAFKA_TOPIC_PREFIX}probe-group"
    consumer = kafka_consumer_factory(topic, group=group)
    message = None
    deadline = time.monotonic() + 30
    while message is None and time.monotonic() < deadline:
        message = consumer.poll(0.5)
    assert message is not None and message.error() is None
    assert (message.key(), message.value()) == (b"k", b"hello")
    consumer.commit(message=message, asynchronous=False)

    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])
    offsets = admin.list_consumer_group_offsets([request])[group].result()
    assert [tp.offset for tp in offsets.topic_partitions] == [1]


def listeners() -> dict[int, str]:
    """What listens on each service's port (`ss`: process name and pid). Only these ports:
    other tests start and stop private Redis and Kafka servers all the time."""
    ports = [Postgres().address[1], Redis().address[1], KafkaNode.from_env().port]
    return {
        port: subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split("users:", 1)[-1]
        for port in ports
    }


def test_services_start_is_idempotent():
    before = listeners()
    assert all("pid=" in listener for listener in before.values()), before
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "scripts/services.py", "start"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("reusing") == 3, result.stdout  # postgres, redis, kafka
    assert listeners() == before


def test_services_status_names_the_broker_version():
    result = subprocess.run(
        [sys.executable, "scripts/services.py", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    kafka_line = next(line for line in result.stdout.splitlines() if line.startswith("kafka"))
    assert " up " in kafka_line and "4." in kafka_line
