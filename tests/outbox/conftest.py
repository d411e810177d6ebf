"""Fixtures of the outbox tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import NewTopic

from infra.kafka import admin_client
from infra.topics import topic_name


@pytest.fixture
def new_topic() -> Iterator:
    """`new_topic(**config)`: a topic of this test run's prefix (logical name returned)."""
    made: list[str] = []

    def make(**config: str) -> str:
        logical = f"outbox-test-{uuid.uuid4().hex[:8]}"
        spec = NewTopic(topic_name(logical), 1, 1, config=config)
        admin = admin_client()
        admin.create_topics([spec])[spec.topic].result(30)
        made.append(spec.topic)
        return logical

    yield make
    if made:
        admin = admin_client()
        for future in admin.delete_topics(made).values():
            future.result(30)
