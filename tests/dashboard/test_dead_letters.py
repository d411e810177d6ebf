"""A poison message's offset is committed only once the dead-letter topic has taken it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.conf import settings
from prometheus_client import REGISTRY

from counts.events import COUNT_VALUE_UPDATED
from dashboard.consuming.loop import DashboardConsumer
from infra.topics import topic_name
from tests.support.pipeline import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    POISON_OVER_512_BYTES,
    set_max_message_bytes,
)
from tests.support.waiting import wait_for

# The consumer reads the relay's backlog from the database once a second (for the
# dashboard), from whichever thread runs it: a slow run reaches that read.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stack]


def dead_letter_failures() -> float:
    sample = "countstream_consumer_dead_letter_errors_total"
    return REGISTRY.get_sample_value(sample) or 0.0


def consume_once_in_a_thread(until: Callable[[], bool], seconds: float, what: str) -> bool:
    """`consume --once` in a thread until it ends or `until()` holds, then stopped; True if
    the thread has ended."""
    consumer = DashboardConsumer(once=True)
    running = threading.Thread(target=consumer.run)
    running.start()
    try:
        wait_for(lambda: not running.is_alive() or until(), seconds, what)
    finally:
        consumer.stop()
        running.join(30)
    return not running.is_alive()


def test_a_dead_letter_kafka_refuses_keeps_its_offset_uncommitted_until_it_is_taken(pipeline):
    dead_letter_topic = topic_name(settings.KAFKA_DEAD_LETTER_TOPIC)
    set_max_message_bytes(dead_letter_topic, "512")
    poison = POISON_OVER_512_BYTES  # too large for the dead-letter topic now
    pipeline.produce_raw([(topic_name(COUNT_VALUE_UPDATED), b"k", poison, None)])
    failures_before = dead_letter_failures()

    ended = consume_once_in_a_thread(
        lambda: dead_letter_failures() > failures_before,
        30,
        "the consumer to finish or the dead-letter write to fail",
    )
    assert ended
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

    consume_once_in_a_thread(lambda: False, 60, "the consumer to park it and finish")

    dead = pipeline.read_all(settings.KAFKA_DEAD_LETTER_TOPIC, expected=1)
    assert [(m.value(), dict(m.headers())["dlq_reason"]) for m in dead] == [(poison, b"not-json")]
    assert pipeline.lag() == 0
