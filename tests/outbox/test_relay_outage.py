"""A broker outage longer than many message timeouts parks nothing (issue 17, item 2).

The relay runs in this process with `OUTBOX_MAX_ATTEMPTS` 1 and a message timeout of 1 s,
against a private broker that the test kills: every batch times out, and a single
counted attempt would park a row. Transient errors must leave every row pending with no
attempt counted, and once the broker is back everything goes out in commit order
(docs/relay.md, Failures).
"""

from __future__ import annotations

import logging
import re
import threading

import pytest
from django.conf import settings
from django.test import override_settings

from outbox.failures import CLUSTER_PAUSE_MAX_S
from outbox.models import OutboxMessage
from outbox.relay import Relay, RelayOptions
from tests.support.relay import (
    assert_commit_order,
    enqueue_backlog,
    outbox_in_commit_order,
    pending_count,
    read_back,
)
from tests.support.servers import crash_broker
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]

KEYS = [f"outage-{n}" for n in range(8)]
MESSAGE_TIMEOUT_MS = 1_000
TIMED_OUT_BATCHES = 3  # per half of the outage: it outlasts six message timeouts
TIMED_OUT = "Kafka did not take"  # the relay's warning for a batch the cluster did not take


def parked_rows() -> bool:
    return OutboxMessage.objects.filter(state=OutboxMessage.State.PARKED).exists()


def wait_for_timed_out_batches(caplog: pytest.LogCaptureFixture, serving: threading.Thread) -> None:
    """Until TIMED_OUT_BATCHES more batches timed out; at once if a row was parked (no
    later batch would time out) or the relay ended."""
    timed_out = caplog.text.count(TIMED_OUT) + TIMED_OUT_BATCHES
    wait_for(
        lambda: (
            caplog.text.count(TIMED_OUT) >= timed_out or parked_rows() or not serving.is_alive()
        ),
        60,
        f"{TIMED_OUT_BATCHES} batches to time out",
    )
    assert serving.is_alive(), "the relay ended during the outage"


def assert_nothing_counted_toward_parking() -> None:
    rows = OutboxMessage.objects.exclude(state=OutboxMessage.State.PUBLISHED)
    assert rows.exists()
    assert {(row.state, row.attempts) for row in rows} == {("pending", 0)}
    # The oldest row of each key met the outage; the later ones wait behind it.
    errors = {row.key: row.last_error for row in rows.order_by("-id")}
    assert set(errors) == set(KEYS)
    assert all("timed out" in error.lower() for error in errors.values()), errors


def test_an_outage_longer_than_the_message_timeout_parks_nothing(private_broker, caplog):
    caplog.set_level(logging.WARNING, logger="outbox")
    quick_timeout = {**settings.KAFKA_PRODUCER_CONFIG, "message.timeout.ms": MESSAGE_TIMEOUT_MS}
    with override_settings(KAFKA_PRODUCER_CONFIG=quick_timeout):
        relay = Relay(RelayOptions(max_attempts=1))
        serving = threading.Thread(target=relay.run)
        serving.start()
        try:
            enqueue_backlog(KEYS, per_key=2)
            wait_for(lambda: pending_count() == 0, 30, "the first rows to go out")

            crash_broker(private_broker)
            for _half in range(2):  # rows written before and in the middle of the outage
                enqueue_backlog(KEYS, per_key=3)
                wait_for_timed_out_batches(caplog, serving)
                assert_nothing_counted_toward_parking()

            private_broker.start()
            wait_for(lambda: pending_count() == 0, 60, "the backlog to drain after the outage")
            # However long the outage, the relay tried again within CLUSTER_PAUSE_MAX_S: it
            # finds the broker back that soon, not after a pause grown to outlast it.
            pauses = [float(s) for s in re.findall(r"retrying in ([\d.]+)s", caplog.text)]
            assert len(pauses) >= 2 * TIMED_OUT_BATCHES
            assert max(pauses) <= CLUSTER_PAUSE_MAX_S
        finally:
            relay.stop()
            serving.join(60)
    assert not serving.is_alive()

    rows = outbox_in_commit_order()
    assert {row.state for row in rows} == {"published"}
    figures = assert_commit_order(read_back({str(row.event_id) for row in rows}), rows)
    assert figures["delivered"] == len(rows) == len(KEYS) * (2 + 3 + 3)
