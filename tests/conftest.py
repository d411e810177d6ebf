"""Shared fixtures: real PostgreSQL, Redis and Kafka, as started by `make services`."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from infra.kafka import client_config
from outbox import wakeup

# Private services to break and app processes to kill (the reliability tests), and an
# isolated event pipeline per test (the consumer and dashboard tests) and Kafka consumers.
pytest_plugins = ["tests.support.fixtures", "tests.support.pipeline"]


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
