"""The consumer against the real Kafka and Redis: effects, idempotency, poison messages."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum

from counts import cache, services
from counts.events import COUNT_INFO_UPDATED, COUNT_VALUE_UPDATED
from counts.models import Count
from dashboard import read_model
from dashboard.consuming.loop import DashboardConsumer, consumer_config
from dashboard.consuming.replay import StartAt
from dashboard.events import CountEvent
from infra.topics import topic_name
from tests.support.pipeline import database_truth, read_model_state
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.stack]


def test_events_refresh_read_model_and_invalidate_caches(pipeline):
    apples = services.count_create(name="apples", value=3)
    pears = services.count_create(name="pears")
    gone = services.count_create(name="gone", value=9)
    generation = cache.redis_client().get(cache.count_generation_key(apples.id))
    cache.read_through(cache.count_key(apples.id), cache.count_generation_key(apples.id), lambda: 3)
    services.count_increment(count_id=apples.id, delta=4)
    services.count_set(count_id=pears.id, value=-2)
    services.count_update_info(count_id=pears.id, name="big pears")
    services.count_delete(count_id=gone.id)
    pipeline.publish_pending()

    pipeline.consume_once()

    assert read_model_state() == {
        str(apples.id): ("apples", 7),
        str(pears.id): ("big pears", -2),
    }
    client = cache.redis_client()
    assert client.get(cache.count_key(apples.id)) is None
    assert client.get(cache.count_generation_key(apples.id)) != generation
    snapshot = read_model.snapshot()
    assert snapshot.total == 5
    assert [entry["name"] for entry in snapshot.top] == ["apples", "big pears"]
    newest = {change["id"]: change for change in reversed(snapshot.feed)}
    assert (newest[str(apples.id)]["name"], newest[str(apples.id)]["value"]) == ("apples", "7")
    assert newest[str(pears.id)]["name"] == "big pears"
    assert pipeline.lag() == 0


def test_replayed_duplicate_and_late_events_change_nothing(pipeline):
    count_id = str(uuid.uuid4())

    def event(version: int, value: int, action: str = "value") -> CountEvent:
        name = "n" if action != "value" else None
        return CountEvent(str(uuid.uuid4()), count_id, version, 1, action, value, name=name)

    read_model.apply_events([event(1, 0, "created"), event(3, 30)])
    stream_length = cache.redis_client().xlen(read_model.stream_key())

    assert read_model.apply_events([event(2, 20)]) == []  # late
    assert read_model.apply_events([event(3, 30)]) == []  # duplicate
    assert read_model.apply_events([event(1, 0, "created")]) == []  # replayed
    assert read_model_state() == {count_id: ("n", 30)}
    assert cache.redis_client().xlen(read_model.stream_key()) == stream_length

    read_model.apply_events([event(5, 0, "deleted"), event(4, 40)])
    assert read_model_state() == {}
    assert read_model.apply_events([event(4, 40), event(1, 0, "created")]) == []
    assert read_model_state() == {}


def test_duplicated_and_shuffled_delivery_ends_at_the_database_truth(pipeline):
    counts = [services.count_create(name=f"c{i}") for i in range(5)]
    for step in range(40):
        services.count_increment(count_id=counts[step % 5].id, delta=step + 1)
    services.count_delete(count_id=counts[4].id)
    pipeline.publish_pending()
    # Deliver everything again in reverse order: stale and duplicated on purpose.
    value_topic = pipeline.read_all(COUNT_VALUE_UPDATED, expected=40)
    info_topic = pipeline.read_all(COUNT_INFO_UPDATED, expected=6)
    assert (len(value_topic), len(info_topic)) == (40, 6)
    pipeline.produce_raw(
        (m.topic(), m.key(), m.value(), m.headers()) for m in reversed(value_topic + info_topic)
    )

    pipeline.consume_once()

    assert read_model_state() == database_truth()
    assert read_model.snapshot().total == Count.objects.aggregate(total=Sum("value"))["total"]


def test_poison_messages_are_dead_lettered_and_the_consumer_goes_on(pipeline):
    good = services.count_create(name="good", value=1)
    stranger = str(uuid.uuid4())
    unknown_count = {
        "event_id": str(uuid.uuid4()),
        "count_id": stranger,
        "old_value": 0,
        "new_value": 5,
        "version": 2,
        "timestamp": 1,
    }
    no_version = {**unknown_count, "count_id": str(good.id)}
    del no_version["version"]
    wrong_key = {**unknown_count, "count_id": str(good.id)}
    value_topic = topic_name(COUNT_VALUE_UPDATED)
    pipeline.produce_raw(
        [
            (value_topic, b"k", b"\xff not json", [("event_id", "x")]),
            (value_topic, str(good.id).encode(), json.dumps(no_version).encode(), None),
            (value_topic, stranger.encode(), json.dumps(unknown_count).encode(), None),
            (value_topic, stranger.encode(), json.dumps(wrong_key).encode(), None),
        ]
    )
    services.count_increment(count_id=good.id, delta=1)
    pipeline.publish_pending()

    pipeline.consume_once()

    assert read_model_state() == {str(good.id): ("good", 2)}
    dead = pipeline.read_all("count-events-dead-letter", expected=4)
    reasons = sorted(dict(m.headers())["dlq_reason"].decode() for m in dead)
    assert reasons == ["not-json", "schema", "schema", "unknown-count"]
    first = next(m for m in dead if m.key() == b"k")
    headers = dict(first.headers())
    assert first.value() == b"\xff not json"
    assert headers["event_id"] == b"x"  # the original headers travel along
    assert headers["dlq_source_topic"].decode() == value_topic
    assert {"dlq_error", "dlq_source_partition", "dlq_source_offset"} <= set(headers)
    assert pipeline.lag() == 0


@pytest.mark.django_db(transaction=True)  # the real relay reads the outbox on its own
def test_a_reader_holding_the_old_row_cannot_refill_the_cache_after_invalidation(pipeline):
    """The stale-fill race, forced: the reader reads the old row, then the write commits, the
    relay publishes it and the consumer invalidates, and only then does the reader try to
    fill the cache."""
    count = services.count_create(name="raced", value=1)
    key, generation_key = cache.count_key(count.id), cache.count_generation_key(count.id)

    def slow_loader() -> int:
        old_value = Count.objects.get(pk=count.id).value
        services.count_increment(count_id=count.id, delta=1)
        pipeline.relay_pending()
        pipeline.consume_once()  # the invalidation lands while this reader is "in flight"
        return old_value

    assert cache.read_through(key, generation_key, slow_loader) == 1  # its own read is served
    assert cache.redis_client().get(key) is None  # ... but its late fill was refused
    fresh = cache.read_through(key, generation_key, lambda: Count.objects.get(pk=count.id).value)
    assert fresh == 2
    assert cache.read_through(key, generation_key, lambda: pytest.fail("not cached")) == 2


def _break_read_model(keep: Count, phantom_id: str) -> None:
    client = cache.redis_client()
    client.hset(read_model.counts_key(), str(keep.id), '{"name":"x","value":"-1","vv":1,"nv":1}')
    client.hset(read_model.counts_key(), phantom_id, '{"name":"ghost","value":"5","vv":1,"nv":1}')
    client.set(cache.count_key(keep.id), '{"generation":"0","value":-1}')


def test_consume_from_beginning_rebuilds_the_read_model_and_caches(pipeline):
    counts = [services.count_create(name=f"r{i}", value=i) for i in range(4)]
    services.count_increment(count_id=counts[0].id, delta=5)
    services.count_delete(count_id=counts[3].id)
    pipeline.publish_pending()
    pipeline.consume_once()
    _break_read_model(counts[0], str(uuid.uuid4()))

    DashboardConsumer(start_at=StartAt(), once=True).run()

    assert read_model_state() == database_truth()
    assert cache.redis_client().get(cache.count_key(counts[0].id)) is None


def test_consume_reset_to_replays_from_a_time_and_repairs_what_it_touches(pipeline):
    count = services.count_create(name="repaired", value=1)
    pipeline.publish_pending()
    pipeline.consume_once()
    before = datetime.now(UTC).isoformat()
    services.count_increment(count_id=count.id, delta=1)
    pipeline.publish_pending()
    pipeline.consume_once()
    cache.redis_client().hset(
        read_model.counts_key(), str(count.id), '{"name":"repaired","value":"-7","vv":2,"nv":1}'
    )

    call_command("consume", "--reset-to", before, "--once", "--metrics-port=0")

    assert read_model_state() == {str(count.id): ("repaired", 2)}


def test_consume_rejects_bad_options():
    with pytest.raises(CommandError, match="at least 1"):
        call_command("consume", "--batch-size=0", "--metrics-port=0")
    with pytest.raises(CommandError, match="time zone"):
        call_command("consume", "--reset-to", "2026-01-01T00:00:00", "--metrics-port=0")


def test_consume_check_passes_with_the_services_up_and_fails_without_kafka(settings, capsys):
    call_command("consume", "--check")
    assert "kafka: ok" in capsys.readouterr().out
    settings.KAFKA_CLIENT_CONFIG = {
        **settings.KAFKA_CLIENT_CONFIG,
        "bootstrap.servers": "127.0.0.1:1",
    }
    with pytest.raises(CommandError, match="not all reachable"):
        call_command("consume", "--check")
    assert "kafka: DOWN" in capsys.readouterr().out


def test_a_damaged_read_model_entry_is_rebuilt_not_a_blocker(pipeline):
    count_id = str(uuid.uuid4())
    cache.redis_client().hset(read_model.counts_key(), count_id, "not json")
    read_model.apply_events([CountEvent(str(uuid.uuid4()), count_id, 2, 1, "updated", 5, "fixed")])
    assert read_model_state() == {count_id: ("fixed", 5)}


def test_static_membership_only_when_an_instance_id_is_set(settings):
    assert "group.instance.id" not in consumer_config(report_partition_ends=False)
    settings.KAFKA_CONSUMER_INSTANCE_ID = "dashboard-0"
    assert consumer_config(report_partition_ends=False)["group.instance.id"] == "dashboard-0"


@pytest.mark.django_db(transaction=True)  # the consumer's thread reads the counts too
def test_a_running_consumer_commits_its_offsets_after_the_effects_not_only_at_stop(pipeline):
    """Commits are spaced (each one is a write to the broker's log), never left for the stop."""
    apples = services.count_create(name="apples")
    for _ in range(5):
        services.count_increment(count_id=apples.id)
    pipeline.publish_pending()
    consumer = DashboardConsumer()

    def consume() -> None:
        try:
            consumer.run()
        finally:
            connection.close()  # this thread's own

    running = threading.Thread(target=consume)
    running.start()
    try:
        wait_for(lambda: read_model_state().get(str(apples.id)) == ("apples", 5), 20, "effects")
        wait_for(lambda: pipeline.lag() == 0, 30, "offsets committed while running")
    finally:
        consumer.stop()
        running.join(10)
