"""Events that satisfy the old hand checks but not the read model: bounded by the contract,
dead-lettered when the Redis script refuses them, and a bogus tombstone undone by reconcile.
Against the real Kafka, Redis and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from redis.exceptions import ResponseError

from counts import contract, services
from counts.events import COUNT_INFO_UPDATED, COUNT_VALUE_UPDATED, now_ms
from counts.models import Count
from dashboard import read_model
from dashboard.events import CountEvent
from dashboard.tasks import reconcile_dashboard
from infra.redis import redis_client
from infra.topics import topic_name
from tests.support.pipeline import consume_within, read_model_state

pytestmark = [pytest.mark.django_db, pytest.mark.stack]
DEAD_LETTER = "count-events-dead-letter"


def produce_event(pipeline, topic: str, count: Count, **fields) -> bytes:
    """One event about `count` on `topic`, its key right, its fields as given (any JSON)."""
    body = {"event_id": str(uuid.uuid4()), "count_id": str(count.id), **fields}
    raw = json.dumps(body).encode()
    pipeline.produce_raw([(topic_name(topic), str(count.id).encode(), raw, None)])
    return raw


def dead_letters(pipeline, expected: int) -> list[tuple[str, bytes]]:
    dead = pipeline.read_all(DEAD_LETTER, expected=expected)
    return [(dict(m.headers())["dlq_reason"].decode(), m.value()) for m in dead]


VALUE = {"old_value": 1, "new_value": 999, "version": 2, "timestamp": 1764165600123}
INFO = {"action": "updated", "name": "renamed", "value": 1, "version": 2, "timestamp": 1}


@pytest.mark.parametrize(
    ("topic", "fields"),
    [
        (COUNT_VALUE_UPDATED, {**VALUE, "version": 2**63}),  # beyond int64: Lua's doubles
        (COUNT_VALUE_UPDATED, {**VALUE, "version": 10**309}),  # inf in Lua: the script fails
        (COUNT_VALUE_UPDATED, {**VALUE, "timestamp": 2**63}),
        (COUNT_VALUE_UPDATED, {**VALUE, "new_value": 2**63}),
        (COUNT_INFO_UPDATED, {**INFO, "name": "\ud800"}),  # a lone surrogate: no UTF-8
        (COUNT_INFO_UPDATED, {**INFO, "version": 2**63}),
    ],
    ids=["version-2^63", "version-1e309", "timestamp-2^63", "value-2^63", "surrogate", "info-2^63"],
)
def test_out_of_bounds_events_are_dead_lettered_and_later_ones_applied(pipeline, topic, fields):
    good = services.count_create(name="good", value=1)
    pipeline.publish_pending()
    hostile = produce_event(pipeline, topic, good, **fields)
    services.count_increment(count_id=good.id, delta=1)
    pipeline.publish_pending()

    consume_within(20)

    assert read_model_state() == {str(good.id): ("good", 2)}
    assert dead_letters(pipeline, expected=1) == [("schema", hostile)]
    assert pipeline.lag() == 0


def test_an_event_the_redis_script_refuses_is_dead_lettered_not_retried(pipeline, monkeypatch):
    """Should the contract ever let through what the script cannot take (here: the name
    check is switched off), that event is poison; the others of its batch are applied."""
    monkeypatch.setattr(contract, "violation", lambda topic, value: None)
    good = services.count_create(name="good", value=1)
    other = services.count_create(name="other")
    pipeline.publish_pending()
    hostile = produce_event(pipeline, COUNT_INFO_UPDATED, good, **{**INFO, "name": "\ud800"})
    services.count_increment(count_id=good.id, delta=1)
    services.count_increment(count_id=other.id, delta=5)
    pipeline.publish_pending()

    consume_within(20)

    assert read_model_state() == {str(good.id): ("good", 2), str(other.id): ("other", 5)}
    assert dead_letters(pipeline, expected=1) == [("redis-script", hostile)]
    assert pipeline.lag() == 0


def test_the_events_of_a_refused_batch_are_applied_and_announced(pipeline):
    count_id = str(uuid.uuid4())
    good = CountEvent(str(uuid.uuid4()), count_id, 1, now_ms(), "created", 3, name="fine")
    bad = CountEvent(str(uuid.uuid4()), str(uuid.uuid4()), 1, now_ms(), "created", 3, "\ud800")

    refused = read_model.apply_events_refusing_poison([good, bad])

    assert list(refused) == [bad] and "unicode" in refused[bad]
    assert read_model_state() == {count_id: ("fine", 3)}
    assert [(c["id"], c["action"]) for c in read_model.snapshot().feed] == [(count_id, "created")]


def test_a_refusal_by_redis_itself_is_no_poison_and_is_raised_for_a_retry(pipeline):
    redis_client().set(read_model.counts_key(), "not a hash")  # WRONGTYPE for every event
    event = CountEvent(str(uuid.uuid4()), str(uuid.uuid4()), 1, now_ms(), "created", 3, "n")

    with pytest.raises(ResponseError, match="WRONGTYPE") as raised:
        read_model.apply_events_refusing_poison([event])
    assert not isinstance(raised.value, read_model.ScriptRefused)


def test_reconcile_lifts_a_tombstone_the_database_contradicts(pipeline):
    """A `deleted` at an absurd version hides a live count; the database says it lives."""
    hidden = services.count_create(name="hidden", value=5)
    deleted = services.count_create(name="deleted")
    services.count_delete(count_id=deleted.id)
    pipeline.publish_pending()
    produce_event(
        pipeline, COUNT_INFO_UPDATED, hidden, **{**INFO, "action": "deleted", "version": 10**15}
    )
    consume_within(20)
    assert read_model_state() == {}

    assert reconcile_dashboard(grace_seconds=0) == {"added": 1, "fixed": 0, "removed": 0}

    assert read_model_state() == {str(hidden.id): ("hidden", 5)}
    services.count_increment(count_id=hidden.id, delta=1)
    pipeline.publish_pending()
    consume_within(20)
    assert read_model_state() == {str(hidden.id): ("hidden", 6)}
    # A tombstone the database agrees with stays.
    assert redis_client().hget(read_model.tombstones_key(), str(deleted.id)) == b"2"
