"""A poison message's offset is committed only once the dead-letter topic has taken it."""

from __future__ import annotations

import pytest
from django.conf import settings
from prometheus_client import REGISTRY

from counts.events import COUNT_VALUE_UPDATED
from infra.topics import topic_name
from tests.support.pipeline import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    POISON_OVER_512_BYTES,
    consume_within,
    set_max_message_bytes,
)

# The consumer reads the relay's backlog from the database once a second (for the
# dashboard): a slow run reaches that read.
pytestmark = [pytest.mark.django_db, pytest.mark.stack]


def dead_letter_failures() -> float:
    sample = "countstream_consumer_dead_letter_errors_total"
    return REGISTRY.get_sample_value(sample) or 0.0


def test_a_dead_letter_kafka_refuses_keeps_its_offset_uncommitted_until_it_is_taken(pipeline):
    dead_letter_topic = topic_name(settings.KAFKA_DEAD_LETTER_TOPIC)
    set_max_message_bytes(dead_letter_topic, "512")
    poison = POISON_OVER_512_BYTES  # too large for the dead-letter topic now
    pipeline.produce_raw([(topic_name(COUNT_VALUE_UPDATED), b"k", poison, None)])
    failures_before = dead_letter_failures()

    consume_within(30, until=lambda: dead_letter_failures() > failures_before)
    assert dead_letter_failures() > failures_before  # and the consumer stopped when asked
    assert pipeline.lag() == 1  # not committed: the poison message is still to be parked

    set_max_message_bytes(dead_letter_topic, KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    pipeline.consume_once()

    dead = pipeline.read_all(settings.KAFKA_DEAD_LETTER_TOPIC, expected=1)
    assert [(m.value(), dict(m.headers())["dlq_reason"]) for m in dead] == [(poison, b"not-json")]
    assert pipeline.lag() == 0


def test_a_poison_message_too_large_for_a_default_producer_is_dead_lettered_whole(pipeline):
    """Another client may write a compressed batch that holds a value over librdkafka's
    default 1 MB message limit; the consumer must park it, not refuse it locally forever."""
    poison = b"\xff not json" + b"x" * 3_000_000
    pipeline.produce_raw(
        [(topic_name(COUNT_VALUE_UPDATED), b"k", poison, None)],
        **{"compression.type": "lz4", "message.max.bytes": 4_000_000},
    )

    consume_within(60)

    dead = pipeline.read_all(settings.KAFKA_DEAD_LETTER_TOPIC, expected=1)
    assert [(m.value(), dict(m.headers())["dlq_reason"]) for m in dead] == [(poison, b"not-json")]
    assert pipeline.lag() == 0
