"""The consumer against the real Kafka and Redis: effects, idempotency, poison messages."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db.models import Sum

from counts import services
from counts.events import COUNT_INFO_UPDATED, COUNT_VALUE_UPDATED
from counts.models import Count
from dashboard import cache, read_model
from dashboard.events import CountEvent
from outbox.services import topic_name
from tests.pipeline import pipeline  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def database_truth() -> dict[str, tuple[str, int]]:
    return {str(c.id): (c.name, c.value) for c in Count.objects.all()}


def read_model_state() -> dict[str, tuple[str, int]]:
    return {i: (e["name"], e["value"]) for i, e in read_model.snapshot().counts.items()}


def test_events_refresh_read_model_and_invalidate_caches(pipeline):  # noqa: F811
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


def test_replayed_duplicate_and_late_events_change_nothing(pipeline):  # noqa: F811
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


def test_duplicated_and_shuffled_delivery_ends_at_the_database_truth(pipeline):  # noqa: F811
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


def test_poison_messages_are_dead_lettered_and_the_consumer_goes_on(pipeline):  # noqa: F811
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
    value_topic = topic_name(COUNT_VALUE_UPDATED)
    pipeline.produce_raw(
        [
            (value_topic, b"k", b"\xff not json", [("event_id", "x")]),
            (value_topic, str(good.id).encode(), json.dumps(no_version).encode(), None),
            (value_topic, stranger.encode(), json.dumps(unknown_count).encode(), None),
        ]
    )
    services.count_increment(count_id=good.id, delta=1)
    pipeline.publish_pending()

    pipeline.consume_once()

    assert read_model_state() == {str(good.id): ("good", 2)}
    dead = pipeline.read_all("count-events-dead-letter", expected=3)
    reasons = sorted(dict(m.headers())["dlq_reason"].decode() for m in dead)
    assert reasons == ["not-json", "schema", "unknown-count"]
    first = next(m for m in dead if m.key() == b"k")
    headers = dict(first.headers())
    assert first.value() == b"\xff not json"
    assert headers["event_id"] == b"x"  # the original headers travel along
    assert headers["dlq_source_topic"].decode() == value_topic
    assert {"dlq_error", "dlq_source_partition", "dlq_source_offset"} <= set(headers)
    assert pipeline.lag() == 0
