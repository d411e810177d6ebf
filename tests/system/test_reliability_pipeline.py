"""The whole pipeline under crashes: relay and consumer SIGKILLed while writes and reads go on.

Real processes against the shared PostgreSQL, Redis and Kafka (each test with topics, a
consumer group and cache keys of its own). Each scenario prints its figures as a JSON line.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.test import Client

from counts import events, services
from counts.models import Count
from infra.topics import topic_name
from outbox.models import OutboxMessage
from outbox.services import serialize
from tests.support.load import SteadyLoad
from tests.support.pipeline import database_truth, read_model_state
from tests.support.processes import CONSUMER_ARGS, RELAY_ARGS, AppProcess
from tests.support.relay import (
    delivery_audit,
    enqueue_backlog,
    outbox_in_commit_order,
    pending_count,
    read_back,
    sent_again_after,
    wait_until_serving,
)
from tests.support.waiting import reporting, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]


def make_counts(n: int) -> list[Count]:
    return [services.count_create(name=f"load-{i}", value=i) for i in range(n)]


def increment_one_of(counts: list[Count]):
    return lambda n: services.count_increment(count_id=counts[n % len(counts)].id, delta=1)


# Each kill lands while the relay works through a burst of BURST rows, in batches of
# RELAY_BATCH: at 100 writes/s alone it is idle most of the time, and a kill then tests little.
BURST, BURST_KEYS, RELAY_BATCH = 4000, 40, 200


@dataclass(frozen=True)
class Kill:
    at_ms: int  # epoch ms, as the CreateTime of the messages around it
    marked_before: int  # rows of its burst the relay had marked published
    pending_after: int  # rows of its burst it left pending: claimed, in flight or waiting


def kill_mid_batch(relay: AppProcess, n: int) -> Kill:
    """Commit a burst, and SIGKILL the relay once it has marked a share of it (from a twelfth
    to a half, the later the kill) and not all."""
    keys = [f"burst-{n}-{k}" for k in range(BURST_KEYS)]
    enqueue_backlog(keys, per_key=BURST // BURST_KEYS)
    burst = OutboxMessage.objects.filter(key__in=keys)
    marked = burst.filter(state=OutboxMessage.State.PUBLISHED)
    # Not at its first mark: the relay has then settled a batch and not yet produced the
    # next one, and a kill finds no row delivered and unmarked. Well into the burst, batches
    # are on the wire while the ones before them are being marked.
    share = BURST * (n + 2) // 24
    wait_for(lambda: marked.count() >= share, 30, "the relay to work on the burst", every=0.005)
    at_ms = int(time.time() * 1000)
    relay.kill()
    return Kill(at_ms, marked.count(), burst.filter(state=OutboxMessage.State.PENDING).count())


def kill_figures(kills: list[Kill]) -> dict:
    return {
        "kills": len(kills),
        "kills_mid_batch": sum(kill.marked_before > 0 and kill.pending_after > 0 for kill in kills),
        "rows_left_pending_by_each_kill": [kill.pending_after for kill in kills],
    }


def test_relay_sigkilled_ten_times_mid_batch_under_steady_writes_loses_and_reorders_nothing(
    app_stack,
):
    counts = make_counts(20)
    relay = app_stack("relay", *RELAY_ARGS, "--batch-size", str(RELAY_BATCH))

    kills: list[Kill] = []
    with reporting("relay-sigkill-x10") as measured:
        with SteadyLoad(increment_one_of(counts), per_second=100) as writes:
            for n in range(10):
                wait_until_serving(relay)
                kills.append(kill_mid_batch(relay, n))
                measured.update(kill_figures(kills))
                relay.start()
        stopped = time.monotonic()
        measured.update(writes=writes.done, failed_writes=len(writes.errors))
        wait_for(lambda: pending_count() == 0, 60, "the restarted relay to drain the outbox")
        measured["drain_after_load_s"] = round(time.monotonic() - stopped, 2)
        assert relay.terminate() == 0

        rows = outbox_in_commit_order()
        received = read_back({str(row.event_id) for row in rows}, require_all=False)
        sent_again = sent_again_after(received, [kill.at_ms for kill in kills])
        measured.update(
            kills_with_rows_sent_again=sum(n > 0 for n in sent_again),
            rows_sent_again_after_each_kill=sent_again,
        )
        figures = delivery_audit(rows, received)
        measured.update(figures)
        assert writes.errors == []
        assert figures["lost"] == 0
        # Every kill caught the relay with rows of its burst done and rows on their way.
        assert all(kill.marked_before > 0 and kill.pending_after > 0 for kill in kills), kills
        assert sum(sent_again) > 0  # some were even delivered, unmarked: sent again, not lost


def poison_messages() -> list[tuple]:
    """Not JSON, the wrong shape, and a well-formed event about a count that never existed."""
    stranger = Count(id=uuid.uuid4(), name="stranger", value=5, version=2)
    event = events.value_updated(stranger, old_value=0)
    valid = serialize({"event_id": str(event.event_id), **event.value})
    topic = topic_name(events.COUNT_VALUE_UPDATED)
    return [
        (topic, b"poison", b"\x00 not json", []),
        (topic, b"poison", json.dumps({"count_id": 7}).encode(), []),
        (topic, event.key.encode(), valid, list(event.headers.items())),
    ]


def test_consumer_sigkilled_mid_batch_leaves_no_stale_cache_and_a_true_read_model(
    app_stack,
    pipeline,
):
    counts = make_counts(20)
    api = Client()
    app_stack("relay", *RELAY_ARGS)
    consumer = app_stack("consume", *CONSUMER_ARGS)
    wait_for(lambda: read_model_state() == database_truth(), 60, "the first events")

    def read_through_the_cache(n: int) -> None:
        # Readers refill the caches all along: the race that leaves a stale entry behind.
        assert api.get(f"/api/counts/{counts[n % len(counts)].id}/").status_code == 200

    with reporting("consumer-sigkill-x2") as measured:
        started = time.monotonic()
        with (
            SteadyLoad(increment_one_of(counts), per_second=100) as writes,
            SteadyLoad(read_through_the_cache, per_second=100) as reads,
        ):
            for kill in range(2):
                consumer.wait_assigned(30)
                time.sleep(random.uniform(0.2, 1.0))
                consumer.restart()
                measured["kills"] = kill + 1
            pipeline.produce_raw(poison_messages())
            time.sleep(1)
        measured.update(writes=writes.done, reads=reads.done)

        wait_for(lambda: pending_count() == 0, 60, "the relay to publish everything")
        load_ended = time.monotonic()
        measured.update(events=OutboxMessage.objects.count(), load_s=round(load_ended - started, 1))
        wait_for(lambda: read_model_state() == database_truth(), 90, "the read model to catch up")
        measured["read_model_converged_after_load_s"] = round(time.monotonic() - load_ended, 2)
        wait_for(lambda: pipeline.lag() == 0, 30, "the consumer to commit everything")

        truth = {str(count.id): count.value for count in Count.objects.all()}
        served = {key: api.get(f"/api/counts/{key}/").json()["value"] for key in truth}
        measured["stale_cache_entries"] = sum(served[key] != value for key, value in truth.items())
        listed = {c["id"]: c["value"] for c in api.get("/api/counts/?limit=100").json()["results"]}
        dead = pipeline.read_all(settings.KAFKA_DEAD_LETTER_TOPIC, expected=3)
        measured["dead_lettered"] = len(dead)
        reasons = sorted(dict(message.headers())["dlq_reason"].decode() for message in dead)
        assert (writes.errors, reads.errors) == ([], [])
        assert served == truth
        assert listed == truth
        assert reasons == ["not-json", "schema", "unknown-count"]
        assert consumer.terminate() == 0
