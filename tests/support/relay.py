"""Helpers for the relay tests: waiting for a relay, backlogs, and reading Kafka back."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition
from django.db import transaction

from counts import events
from infra.kafka import client_config
from infra.topics import topic_name
from outbox.models import OutboxMessage
from outbox.services import Event, enqueue
from tests.support.processes import AppProcess
from tests.support.waiting import wait_for


def wait_until_serving(relay: AppProcess, timeout: float = 30) -> None:
    """Until the relay holds lanes (since its latest start)."""

    def serving() -> bool:
        return "lanes " in relay.log().rsplit("--- start", 1)[-1]

    wait_for(serving, timeout, f"{relay.name} to take lanes")


def published_count() -> int:
    return OutboxMessage.objects.filter(state=OutboxMessage.State.PUBLISHED).count()


def pending_count() -> int:
    return OutboxMessage.objects.filter(state=OutboxMessage.State.PENDING).count()


def enqueue_backlog(keys: list[str], per_key: int, per_transaction: int = 2000) -> None:
    """Outbox rows for `keys`, interleaved (k0, k1, ..., k0, k1, ...), each with a version."""
    pending = [
        Event(
            topic=events.COUNT_VALUE_UPDATED,
            key=key,
            value={
                "count_id": key,
                "old_value": version - 1,
                "new_value": version,
                "version": version,
                "timestamp": events.now_ms(),
            },
        )
        for version in range(1, per_key + 1)
        for key in keys
    ]
    for start in range(0, len(pending), per_transaction):
        with transaction.atomic():
            enqueue(*pending[start : start + per_transaction])


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    key: str
    event_id: str
    headers: dict[str, str]
    value: dict
    created_ms: int  # the producer's CreateTime: when a relay handed it to librdkafka


def read_back(
    expected_ids: set[str], timeout: float = 60, *, require_all: bool = True
) -> list[Received]:
    """Every message of the topics from the beginning, until all expected event ids are in.

    Messages come in partition order, which is what per-key order on the wire means. With
    `require_all` False, events still missing after `timeout` are the caller's to count.
    """
    consumer = Consumer(
        client_config(
            **{"group.id": f"relay-test-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
    )
    metadata = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(topic, partition, 0)
            for topic in [topic_name(name) for name in events.TOPICS]
            if topic in metadata.topics
            for partition in metadata.topics[topic].partitions
        ]
    )
    received: list[Received] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not expected_ids <= seen and time.monotonic() < deadline:
            for message in consumer.consume(5000, 0.2):
                if message.error():
                    continue
                headers = {name: value.decode() for name, value in message.headers() or []}
                received.append(
                    Received(
                        message.topic(),
                        message.partition(),
                        message.key().decode(),
                        headers["event_id"],
                        headers,
                        json.loads(message.value()),
                        message.timestamp()[1],
                    )
                )
                seen.add(headers["event_id"])
    finally:
        consumer.close()
    missing = expected_ids - seen
    assert not (require_all and missing), f"{len(missing)} of {len(expected_ids)} never arrived"
    return received


def outbox_in_commit_order() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.order_by("id"))


def delivery_audit(
    rows: list[OutboxMessage], received: list[Received] | None = None
) -> dict[str, int]:
    """Read the rows' events back from Kafka unless `received` has them (per-key commit
    order of those that arrived is asserted on the way): how many were written, delivered,
    duplicated and lost. A loss is counted, not raised, so that the figures of a failing
    run are reported too; the caller asserts `lost == 0` after reporting."""
    if received is None:
        received = read_back({str(row.event_id) for row in rows}, require_all=False)
    figures = assert_commit_order(received, rows)
    return {
        "written": len(rows),
        "delivered": figures["delivered"],
        "duplicated": figures["duplicates"],
        "lost": len(rows) - figures["delivered"],
    }


def sent_again_after(received: list[Received], moments_ms: list[int]) -> list[int]:
    """For each moment (say a relay's SIGKILL): the events sent both since the moment before
    it and after it. The relay killed then had them on their way, delivered but not marked."""
    copies: dict[str, list[int]] = defaultdict(list)
    for message in received:
        copies[message.event_id].append(message.created_ms)
    bounds = zip([0, *moments_ms], moments_ms, strict=False)
    return [
        sum(
            any(since < t <= moment for t in times) and max(times) > moment
            for times in copies.values()
        )
        for since, moment in bounds
    ]


def assert_commit_order(received: list[Received], rows: list[OutboxMessage]) -> dict:
    """Per topic and key, the first arrival of each event follows outbox id (commit) order
    (among the events that arrived: a missing one is a loss, which the figures count).

    Returns figures: events expected, delivered, duplicates.
    """
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.id):
        expected[(row.topic, row.key)].append(str(row.event_id))
    arrived: dict[tuple[str, str], list[str]] = defaultdict(list)
    firsts: set[str] = set()
    for message in received:
        if message.event_id not in firsts:
            firsts.add(message.event_id)
            arrived[(message.topic, message.key)].append(message.event_id)
    wanted = {event_id for ids in expected.values() for event_id in ids}
    for stream, ids in expected.items():
        got = [event_id for event_id in arrived[stream] if event_id in wanted]
        assert got == [event_id for event_id in ids if event_id in firsts], (
            f"order broken for {stream}"
        )
    return {
        "expected": len(wanted),
        "delivered": len(firsts & wanted),
        "duplicates": sum(1 for m in received if m.event_id in wanted) - len(firsts & wanted),
    }


def event_ids_on_the_wire(timeout: float = 30) -> list[str]:
    """The event id of every message on the count topics, read to their current end
    (duplicates included): what reached Kafka, to compare with the outbox's states."""
    consumer = Consumer(
        client_config(
            **{
                "group.id": f"relay-test-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    metadata = consumer.list_topics(timeout=10)
    partitions = {
        (topic, partition)
        for topic in [topic_name(name) for name in events.TOPICS]
        for partition in metadata.topics[topic].partitions
    }
    consumer.assign([TopicPartition(topic, partition, 0) for topic, partition in partitions])
    ids: list[str] = []
    at_end: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    try:
        while at_end != partitions:
            assert time.monotonic() < deadline, "timed out reading the topics to their end"
            for message in consumer.consume(5000, 0.2):
                if message.error() is None:
                    ids.append(dict(message.headers())["event_id"].decode())
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add((message.topic(), message.partition()))
    finally:
        consumer.close()
    return ids
