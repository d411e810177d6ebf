"""The feed tells what happened, when it happened: repairs of the read model are no events."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from counts import services
from counts.models import Count
from dashboard import read_model
from dashboard.tasks import reconcile_dashboard
from infra.redis import redis_client
from outbox.models import OutboxMessage
from tests.pipeline import database_truth, read_model_state

pytestmark = pytest.mark.django_db


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
