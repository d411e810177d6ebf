"""A relay's SIGTERM: only rows Kafka acknowledged are marked published, the rest stay pending.

The relay works against a private broker that the test freezes (SIGSTOP: requests are
taken, nothing is answered) or kills, so the signal always lands while a batch waits for
its acknowledgements. Each phase compares what reached Kafka, read back to the topics'
end, with the outbox's states (docs/relay.md, Shutdown and crashes).
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.db import connection, transaction

from counts import services
from outbox.models import OutboxMessage
from tests.support.processes import AppProcess
from tests.support.relay import event_ids_on_the_wire
from tests.support.servers import frozen
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]

UNCONFIRMED = re.compile(r"relay: (\d+) deliveries unconfirmed at shutdown")


def event_ids(state: str) -> set[str]:
    rows = OutboxMessage.objects.filter(state=state)
    return {str(event_id) for event_id in rows.values_list("event_id", flat=True)}


def database_now() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()::text")
        return cursor.fetchone()[0]


def increment_all(counts: list) -> None:
    """One commit, so that one claim takes all of its rows."""
    with transaction.atomic():
        for count in counts:
            services.count_increment(count_id=count.id)


def has_claimed_since(relay: AppProcess, since: str) -> bool:
    """A claim of the relay's began after `since` and is over: it saw every row committed
    before then (the relay holds every lane, being the only one)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'countstream-relay' AND state = 'idle' "
            "AND query LIKE '%%CROSS JOIN LATERAL%%' AND query_start > %s::timestamptz",
            [since],
        )
        return cursor.fetchone()[0] > 0 and "lanes " in relay.log()


def assert_wire_matches_outbox() -> None:
    """Every published row is on the wire once, and no pending row is there."""
    on_the_wire = event_ids_on_the_wire()
    assert set(on_the_wire) == event_ids("published")
    assert max(Counter(on_the_wire).values()) == 1


def test_sigterm_marks_what_kafka_acknowledges_within_the_grace_and_no_more(
    private_broker, start_relay
):
    bootstrap = f"127.0.0.1:{private_broker.port}"
    counts = [services.count_create(name=f"before-{n}") for n in range(5)]
    increment_all(counts)
    written = database_now()

    # SIGTERM while the batch waits for a broker that answers only after the signal.
    with frozen(private_broker):
        relay = start_relay(KAFKA_BOOTSTRAP_SERVERS=bootstrap)
        wait_for(lambda: has_claimed_since(relay, written), 30, "the relay to claim the rows")
        relay.process.terminate()
        wait_for(lambda: "stopping after the current batch" in relay.log(), 10, "the signal")
    assert relay.process.wait(40) == 0, relay.log()
    assert not event_ids("pending"), relay.log()
    assert_wire_matches_outbox()

    # SIGTERM while the broker stays down past the grace: nothing more is marked.
    delivered = event_ids("published")
    private_broker.stop(hard=True)
    increment_all(counts)
    written, stranded = database_now(), event_ids("pending")
    assert len(stranded) == len(counts)
    relay = start_relay("--shutdown-grace", "2", KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    wait_for(lambda: has_claimed_since(relay, written), 30, "the relay to claim them")
    assert relay.terminate(timeout=30) == 0, relay.log()
    # The grace ran out once, with the whole batch unconfirmed.
    assert [int(n) for n in UNCONFIRMED.findall(relay.log())] == [len(stranded)], relay.log()
    assert event_ids("pending") == stranded
    assert event_ids("published") == delivered
    # Sending them once the broker is back: test_relay_faults.py's broker outage.
