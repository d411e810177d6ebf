"""The feed tells what happened, when it happened: repairs of the read model are no events."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.management import call_command

from counts import services
from counts.models import Count
from dashboard import read_model, selectors
from dashboard.events import CountEvent
from dashboard.read_model import Update
from dashboard.tasks import reconcile_dashboard
from infra.redis import redis_client
from outbox.models import OutboxMessage
from tests.support.pipeline import database_truth, read_model_state

pytestmark = [pytest.mark.django_db, pytest.mark.stack]


def feed() -> list[tuple[str, str]]:
    return [(change["action"], change.get("name")) for change in read_model.snapshot().feed]


def restart_consumer() -> None:
    """`manage.py consume` as a restart runs it: the start-up catch-up, then the log."""
    call_command("consume", "--once", "--metrics-port=0")


def test_feed_entries_carry_the_time_of_their_event(pipeline):
    count = services.count_create(name="timed", value=3)
    events = [json.loads(bytes(r.value)) for r in OutboxMessage.objects.filter(key=str(count.id))]
    pipeline.publish_pending()
    pipeline.consume_once()

    (entry,) = read_model.snapshot().feed
    assert entry["action"] == "created"
    assert entry["ts"] in {event["timestamp"] for event in events}


def test_a_consumer_restart_on_a_lost_read_model_invents_no_feed_entries(pipeline):
    for name in ("apples", "pears", "plums"):
        services.count_create(name=name, value=7)
    pipeline.publish_pending()
    pipeline.consume_once()
    assert sorted(feed()) == [("created", n) for n in ("apples", "pears", "plums")]
    # Redis lost its data (a restart without persistence), then the consumer restarts.
    client = redis_client()
    client.unlink(*client.scan_iter(match=read_model.counts_key().replace("counts", "*")))

    restart_consumer()

    assert read_model_state() == database_truth()  # the counts are all back ...
    assert feed() == []  # ... but none of them was created now


def test_changes_made_while_the_consumer_was_stopped_are_told_by_their_events(pipeline):
    kept = services.count_create(name="kept", value=1)
    pipeline.publish_pending()
    pipeline.consume_once()
    # The consumer is stopped; meanwhile a count is created and another one changes.
    services.count_increment(count_id=kept.id, delta=4)
    services.count_create(name="new", value=2)
    pipeline.publish_pending()

    restart_consumer()  # its start-up catch-up shows them before their events arrive

    assert read_model_state() == database_truth()
    newest = read_model.snapshot().feed[:2]
    assert sorted((c["action"], c["name"], c["value"]) for c in newest) == [
        ("created", "new", "2"),
        ("value", "kept", "5"),
    ]
    assert all(c.get("ts") != 0 and not c.get("repair") for c in newest)
    history = selectors.count_detail(str(kept.id))["history"]
    assert [value for _, value in history] == ["1", "5"]


def test_a_reconcile_repairs_numbers_without_feed_entries(pipeline):
    count = services.count_create(name="drifted", value=1)
    pipeline.publish_pending()
    pipeline.consume_once()
    before = feed()
    redis_client().hdel(read_model.counts_key(), str(count.id))
    Count.objects.filter(id=count.id).update(value=5)  # drift, without an event

    assert reconcile_dashboard(grace_seconds=0) == {"added": 1, "fixed": 0, "removed": 0}

    assert read_model_state() == database_truth()
    assert feed() == before


@pytest.mark.parametrize("value_first", [True, False])
def test_a_creation_a_repair_got_ahead_of_is_told_once_whichever_event_comes_first(
    pipeline, value_first
):
    count_id = str(uuid.uuid4())
    read_model.apply_updates({count_id: Update(count_id, 5, 1, "2", 1, "new")}, repair=True)
    created = CountEvent(str(uuid.uuid4()), count_id, 1, 1000, "created", 2, "new")
    value = CountEvent(str(uuid.uuid4()), count_id, 1, 1000, "value", 2)

    for event in [value, created] if value_first else [created, value]:
        read_model.apply_events([event])

    assert [(c["action"], c["name"], c["ts"]) for c in read_model.snapshot().feed] == [
        ("created", "new", 1000)
    ]
