"""Shared fixtures: real PostgreSQL, Redis and Kafka, as started by `make services`."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer
from django.conf import settings

from outbox import wakeup
from outbox.kafka import client_config

# Private services to break and app processes to kill (the reliability tests), and an
# isolated event pipeline per test (the consumer and dashboard tests).
pytest_plugins = ["tests.faults", "tests.pipeline"]


@pytest.fixture(scope="session", autouse=True)
def _stop_relay_wakeup(django_db_setup, django_db_blocker):
    """The relay wake-up thread holds a connection to the test database: close it first."""
    yield
    with django_db_blocker.unblock():
        wakeup.stop_notifier()


@pytest.fixture
def kafka_producer() -> Producer:
    producer = Producer(client_config())
    yield producer
    producer.flush(10)


@pytest.fixture
def kafka_consumer_factory():
    """Build consumers in a fresh group each; all are closed at the end of the test."""
    consumers: list[Consumer] = []

    def make(*topics: str, group: str | None = None) -> Consumer:
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
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()
