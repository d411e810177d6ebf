"""Events of a count deleted before they are consumed, arriving in later batches.

The consumer must apply them harmlessly: no count comes back, nothing is dead-lettered
(the outbox or the tombstone knows the count, docs/caching.md), and every offset is
committed. Events go out through the real relay.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from django.conf import settings

from counts import services
from dashboard.consuming.loop import DashboardConsumer
from dashboard.read_model import tombstones_key
from infra.kafka import client_config
from infra.redis import redis_client
from infra.topics import topic_name
from outbox.models import OutboxMessage
from tests.support.pipeline import database_truth, read_model_state

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.stack]


def dead_letters() -> int:
    """Messages on the dead-letter topic, from its partitions' end offsets."""
    topic = topic_name(settings.KAFKA_DEAD_LETTER_TOPIC)
    probe = Consumer(client_config(**{"group.id": f"{settings.KAFKA_CONSUMER_GROUP}-probe"}))
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions
        ]
    finally:
        probe.close()
    return sum(high for _, high in ends)


def tombstone(count_id) -> bytes | None:
    return redis_client().hget(tombstones_key(), str(count_id))


def consume_one_event_per_batch() -> None:
    """A fresh consumer (it has met no count yet), each event a batch of its own."""
    DashboardConsumer(once=True, batch_size=1).run()


def assert_gone_and_nothing_dead_lettered(pipeline, count_id) -> None:
    assert str(count_id) not in read_model_state()
    assert read_model_state() == database_truth()
    assert tombstone(count_id) is not None
    assert dead_letters() == 0
    assert pipeline.lag() == 0


def test_events_consumed_after_the_delete_committed_and_before_its_event(pipeline):
    kept = services.count_create(name="kept", value=1)
    doomed = services.count_create(name="doomed", value=1)
    services.count_increment(count_id=doomed.id, delta=4)
    pipeline.relay_pending()
    services.count_delete(count_id=doomed.id)  # its deletion is not on the wire yet

    # The database no longer has the count and the read model never showed it: only the
    # outbox tells its events from an unknown count's.
    consume_one_event_per_batch()
    assert dead_letters() == 0
    assert read_model_state()[str(doomed.id)][1] == 5

    pipeline.relay_pending()
    consume_one_event_per_batch()  # the deletion, in a later batch
    assert_gone_and_nothing_dead_lettered(pipeline, doomed.id)
    assert read_model_state() == {str(kept.id): ("kept", 1)}


def test_a_deleted_counts_events_interleaved_one_per_batch_leave_no_count_behind(pipeline):
    doomed = [services.count_create(name=f"doomed-{n}", value=n) for n in range(4)]
    for count in doomed:
        services.count_increment(count_id=count.id, delta=3)
        services.count_update_info(count_id=count.id, name=f"renamed-{count.id}")
        services.count_delete(count_id=count.id)
    pipeline.relay_pending()

    # The two topics interleave in any order, so each count's deletion comes before some of
    # its other events and after others.
    consume_one_event_per_batch()
    for count in doomed:
        assert_gone_and_nothing_dead_lettered(pipeline, count.id)


def test_a_deleted_counts_events_sent_again_after_its_deletion_do_not_bring_it_back(pipeline):
    doomed = services.count_create(name="doomed", value=1)
    services.count_increment(count_id=doomed.id, delta=1)
    services.count_delete(count_id=doomed.id)
    pipeline.relay_pending()
    consume_one_event_per_batch()
    assert_gone_and_nothing_dead_lettered(pipeline, doomed.id)

    # A relay that died before marking sends them again: duplicates in a later batch, which
    # arrive after the outbox pruned the rows: only the tombstone knows the count now.
    rows = OutboxMessage.objects.filter(key=str(doomed.id))
    sent_again = [row.id for row in rows if b'"deleted"' not in bytes(row.value)]
    OutboxMessage.objects.filter(id__in=sent_again).update(state=OutboxMessage.State.PENDING)
    pipeline.relay_pending()
    rows.delete()
    consume_one_event_per_batch()
    assert_gone_and_nothing_dead_lettered(pipeline, doomed.id)
