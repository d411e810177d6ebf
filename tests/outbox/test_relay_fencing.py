"""A relay that loses its lease mid-batch (issue 15, item 5): another relay owns its lanes
at once and sends the same rows and later ones, so the first may neither produce what it
had claimed nor mark what it had sent. Checked on the wire: per key, the last arrival of
every event follows commit order (the consumers keep the newest version they see)."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from django.db import connection

from counts import events
from infra.kafka import client_config
from infra.topics import topic_name
from outbox.leases import MEMBER_LOCKS
from outbox.models import OutboxMessage
from outbox.relay import Relay, RelayOptions
from tests.support.processes import RELAY_TIMING, database_url
from tests.support.relay import (
    Received,
    enqueue_backlog,
    outbox_in_commit_order,
    pending_count,
    read_back,
    wait_until_serving,
)
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]

PER_LANE = 20  # a batch of the first relay: 20 rows of each of the 64 lanes (prefetching)


def _end_offset(topic: str) -> int:
    consumer = Consumer(client_config(**{"group.id": f"offsets-{uuid.uuid4().hex[:8]}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def _first_rows_per_lane(per_lane: int) -> int:
    """How many rows the oldest `per_lane` pending rows of every lane are."""
    query = f"""
        SELECT count(*) FROM (
            SELECT row_number() OVER (PARTITION BY lane ORDER BY id) AS place
              FROM {OutboxMessage._meta.db_table} WHERE state = 'pending') ranked
         WHERE place <= %s"""
    with connection.cursor() as cursor:
        cursor.execute(query, [per_lane])
        return cursor.fetchone()[0]


def _relay_backends(session: psycopg.Connection) -> list[int]:
    """Backend pids of the relays' lease sessions (their membership locks)."""
    rows = session.execute(
        """SELECT objid::int FROM pg_locks
            WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        [MEMBER_LOCKS],
    ).fetchall()
    return [pid for (pid,) in rows]


def _is_idle(session: psycopg.Connection, pid: int) -> bool:
    row = session.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    return row is not None and row[0] == "idle"


def _a_mark_waits_on_a_lock(session: psycopg.Connection) -> bool:
    row = session.execute(
        """SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'
              AND application_name = 'countstream-relay'"""
    ).fetchone()
    return row[0] > 0


def assert_last_arrivals_in_commit_order(received: list[Received], rows: list) -> None:
    """Per topic and key, the events ordered by their last arrival are in outbox id order."""
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.id):
        expected[(row.topic, row.key)].append(str(row.event_id))
    last_seen: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for position, message in enumerate(received):
        last_seen[(message.topic, message.key)][message.event_id] = position
    for stream, ids in expected.items():
        arrived = last_seen[stream]
        by_last_arrival = sorted((i for i in ids if i in arrived), key=arrived.__getitem__)
        assert by_last_arrival == ids, f"last arrivals out of commit order for {stream}"


def test_a_relay_that_lost_its_lease_mid_batch_sends_nothing_it_had_claimed(start_relay):
    enqueue_backlog([str(uuid.uuid4()) for _ in range(200)], per_key=30)
    rows = outbox_in_commit_order()
    healthy_topic = topic_name(events.COUNT_VALUE_UPDATED)
    sent_by_first = _first_rows_per_lane(2 * PER_LANE)  # its first two batches
    offset_before = _end_offset(healthy_topic)
    sent = lambda: _end_offset(healthy_topic) - offset_before  # noqa: E731

    session = psycopg.connect(database_url(connection.settings_dict), autocommit=True)
    blocker = psycopg.connect(database_url(connection.settings_dict))
    # The first relay's mark of its first batch waits on this row lock, so after its second
    # batch it stands still holding a third, claimed in advance (prefetched).
    blocker.execute(
        f"SELECT 1 FROM {OutboxMessage._meta.db_table} WHERE id = %s FOR UPDATE", [rows[0].id]
    )
    first = Relay(
        RelayOptions(batch_size=64 * PER_LANE, rebalance_interval=3600, report_interval=3600)
    )
    serving = threading.Thread(target=first.run)
    serving.start()
    try:
        wait_for(lambda: sent() >= sent_by_first, 60, "the first relay's first two batches")
        wait_for(lambda: _a_mark_waits_on_a_lock(session), 30, "the first relay's mark to wait")
        (lease_pid,) = _relay_backends(session)
        wait_for(lambda: _is_idle(session, lease_pid), 30, "the prefetched claim to finish")
        session.execute("SELECT pg_terminate_backend(%s)", [lease_pid])

        second = start_relay(*RELAY_TIMING)
        wait_until_serving(second)
        wait_for(
            lambda: sent() >= sent_by_first + len(rows), 60, "the second relay to send every row"
        )
        blocker.rollback()  # the first relay goes on where it stood
        wait_for(lambda: pending_count() == 0, 60, "every row published")
    finally:
        blocker.close()
        first.stop()
        serving.join(60)
        session.close()
    assert second.terminate() == 0

    received = read_back({str(row.event_id) for row in rows})
    assert_last_arrivals_in_commit_order(received, rows)
