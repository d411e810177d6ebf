"""The relay under load and faults: several relays, SIGKILL, a broker that goes away.

Each scenario reads every event back from Kafka and checks it against the outbox: nothing
missing, and per topic and key the first arrival of each event follows commit order.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
from django.db import close_old_connections, connection

from counts import services
from tests.support.processes import RELAY_TIMING, AppProcess
from tests.support.relay import (
    assert_commit_order,
    enqueue_backlog,
    outbox_in_commit_order,
    pending_count,
    published_count,
    read_back,
    wait_until_serving,
)
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]


def published_by(relay: AppProcess) -> int:
    match = re.search(r"stopped after publishing (\d+) rows", relay.log())
    assert match, relay.log()
    return int(match[1])


class Writers:
    """Threads that keep committing small interleaved batches of events until stopped.

    Each thread writes its own keys, as the services do by locking the count's row: per
    key, outbox id order is commit order. Across keys (and so within a lane) the threads
    race, so rows with smaller ids keep becoming visible after larger ones.
    """

    def __init__(self, keys: list[str], threads: int = 2) -> None:
        self.stopped = threading.Event()
        self.threads = [
            threading.Thread(target=self._write, args=(keys[n::threads],)) for n in range(threads)
        ]

    def _write(self, keys: list[str]) -> None:
        try:
            while not self.stopped.wait(0.01):
                enqueue_backlog(keys[:: 1 + int(time.time() * 10) % 3], per_key=1)
        finally:
            connection.close()

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


def test_two_then_three_relays_share_the_lanes_and_keep_per_key_order(start_relay):
    keys = [str(uuid.uuid4()) for _ in range(60)]
    enqueue_backlog(keys, per_key=50)
    with Writers(keys):
        relays = [start_relay(*RELAY_TIMING) for _ in range(2)]
        for relay in relays:
            wait_until_serving(relay)
        wait_for(lambda: "(2 relays" in relays[0].log(), 10, "two relays to see each other")
        relays.append(start_relay(*RELAY_TIMING))
        wait_until_serving(relays[2])
        wait_for(lambda: all("(3 relays" in relay.log() for relay in relays), 10, "three relays")
        time.sleep(1.5)  # all three publish under the running writers
    wait_for(lambda: pending_count() == 0, 30, "the backlog to drain")
    assert [relay.terminate() for relay in relays] == [0, 0, 0]

    rows = outbox_in_commit_order()
    shares = [published_by(relay) for relay in relays]
    assert all(share > 0 for share in shares), shares
    received = read_back({str(row.event_id) for row in rows})
    figures = assert_commit_order(received, rows)
    print(f"3 relays: {figures}, published per relay {shares}")
    assert figures["delivered"] == figures["expected"] == len(rows)


def test_sigkill_in_the_middle_of_a_large_backlog_loses_nothing(start_relay):
    total = left = 0
    for _ in range(3):  # again, with a new backlog, if the relay drained it before the kill
        before = published_count()
        enqueue_backlog([str(uuid.uuid4()) for _ in range(200)], per_key=100)
        total += 200 * 100
        relay = start_relay("--batch-size", "1000")
        going = lambda before=before: published_count() - before >= 2000  # noqa: E731
        wait_for(going, 60, "the relay to get going", 0.005)
        relay.kill()
        if left := pending_count():
            break
    print(f"SIGKILL with {total - left} of {total} published, {left} pending")
    assert 0 < left < total

    restarted = start_relay("--once")
    assert restarted.process.wait(120) == 0, restarted.log()
    assert pending_count() == 0

    rows = outbox_in_commit_order()
    received = read_back({str(row.event_id) for row in rows})
    figures = assert_commit_order(received, rows)
    print(f"after SIGKILL and restart: {figures}")
    assert figures["delivered"] == total


def test_broker_stopped_while_writes_go_on_then_restarted_everything_arrives(
    private_broker, start_relay
):
    bootstrap = f"127.0.0.1:{private_broker.port}"
    counts = [services.count_create(name=f"outage-{n}") for n in range(20)]

    def write(rounds: int) -> None:
        for _ in range(rounds):
            for count in counts:
                services.count_increment(count_id=count.id)

    relay = start_relay(*RELAY_TIMING, KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    wait_until_serving(relay)
    write(3)
    wait_for(lambda: pending_count() == 0, 30, "the first writes to go out")

    # Killed, not stopped: a graceful stop of this single node can hang for a minute.
    private_broker.stop(hard=True)
    started = time.monotonic()
    write(10)  # the API's writes need PostgreSQL only
    wait_for(lambda: "Kafka: " in relay.log(), 30, "the relay to report the outage")
    assert pending_count() > 0
    time.sleep(max(0.0, 3 - (time.monotonic() - started)))

    private_broker.start()
    back = time.monotonic()
    close_old_connections()
    wait_for(lambda: pending_count() == 0, 90, "the backlog to drain after the outage")
    print(f"broker down {back - started:.1f}s; drained {time.monotonic() - back:.1f}s after")
    assert relay.terminate() == 0

    rows = outbox_in_commit_order()
    received = read_back({str(row.event_id) for row in rows})
    figures = assert_commit_order(received, rows)
    print(f"broker outage: {figures}")
    assert figures["delivered"] == len(rows) == 20 + 20 * 13
