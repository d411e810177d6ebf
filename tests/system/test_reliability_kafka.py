"""Kafka faults: the broker gone for 20 s under API writes, and a broker lost from a cluster.

Both run on private brokers (the shared one is never stopped), with the web server, the
relay and the consumer as real processes. Each scenario prints its figures as a JSON line.
"""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka.admin import AdminClient
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from rest_framework.authtoken.models import Token

from counts import events, services
from counts.models import Count
from infra.topics import ensure_topics, managed_topics
from outbox.models import OutboxMessage
from tests.support.load import SteadyLoad
from tests.support.pipeline import database_truth, read_model_state
from tests.support.processes import CONSUMER_ARGS, RELAY_ARGS, AppProcess, api_client
from tests.support.relay import delivery_audit, outbox_in_commit_order, pending_count
from tests.support.servers import crash_broker
from tests.support.waiting import reporting, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]

OUTAGE_SECONDS = 20
BROKER_START_SECONDS = 12


def on_cluster(bootstrap: str, **other_settings):
    """Django settings that point this process's Kafka clients at a private cluster."""
    config = {**settings.KAFKA_CLIENT_CONFIG, "bootstrap.servers": bootstrap}
    return override_settings(KAFKA_CLIENT_CONFIG=config, **other_settings)


def create_topics(bootstrap: str, replication: int = 1) -> None:
    """The project's topics, laid out by the project's own code, on a private cluster."""
    with on_cluster(
        bootstrap,
        KAFKA_TOPIC_REPLICATION_FACTOR=replication,
        KAFKA_TOPIC_MIN_INSYNC_REPLICAS=max(1, replication - 1),
    ):
        ensure_topics(managed_topics())


def audit(rows: list[OutboxMessage], bootstrap: str) -> dict:
    """Read every event back from the cluster; per-key order is asserted on the way."""
    with on_cluster(bootstrap):
        return delivery_audit(rows)


def complaints(process: AppProcess) -> int:
    """Lines a process logged at WARNING or above, its own or librdkafka's straight to stderr
    (`%4|...`): an outage should cost a handful."""
    loud = r"^(?:\S+ \S+ (?:WARNING|ERROR|CRITICAL) |%[0-4]\|)"
    return len(re.findall(loud, process.log(), re.MULTILINE))


def test_broker_down_20s_under_api_writes_fails_no_write_and_drains_after(app_stack, private_kafka):
    bootstrap = f"127.0.0.1:{private_kafka.port}"
    create_topics(bootstrap)
    counts = [services.count_create(name=f"outage-{n}") for n in range(10)]
    _, base_url = app_stack("web")
    relay = app_stack("relay", *RELAY_ARGS, kafka=bootstrap)
    consumer = app_stack("consume", *CONSUMER_ARGS, kafka=bootstrap)
    user = get_user_model().objects.create_user("load", password="pw")
    api = api_client(base_url, Token.objects.create(user=user).key)

    def write(n: int) -> None:
        url = f"/api/counts/{counts[n % len(counts)].id}/increment/"
        api.post(url, json={"delta": 1}).raise_for_status()

    with reporting("kafka-broker-down") as measured:
        wait_for(lambda: read_model_state() == database_truth(), 60, "the first events")
        with SteadyLoad(write, per_second=50) as writes:
            time.sleep(2)
            crash_broker(private_kafka)
            down, written_before = time.monotonic(), writes.done
            # The broker takes ~10-15 s to come back on this machine: part of the outage.
            time.sleep(OUTAGE_SECONDS - BROKER_START_SECONDS)
            private_kafka.start()
            back = time.monotonic()
            backlog, writes_during_outage = pending_count(), writes.done - written_before
            measured.update(
                outage_s=round(back - down, 1),
                api_writes_during_outage=writes_during_outage,
                backlog_at_restart=backlog,
            )
            time.sleep(2)
        measured.update(api_writes=writes.done, failed_api_writes=len(writes.errors))
        wait_for(lambda: pending_count() == 0, 90, "the relay to drain the backlog")
        measured["drain_after_restart_s"] = round(time.monotonic() - back, 2)
        wait_for(lambda: read_model_state() == database_truth(), 60, "the dashboard to catch up")
        measured["dashboard_caught_up_after_restart_s"] = round(time.monotonic() - back, 2)
        measured.update(
            relay_warning_lines=complaints(relay), consumer_warning_lines=complaints(consumer)
        )

        figures = audit(outbox_in_commit_order(), bootstrap)
        measured.update(figures)
        assert writes.errors == []
        assert writes_during_outage > 0 and backlog > 0
        assert figures["lost"] == 0
        assert complaints(relay) <= 20 and complaints(consumer) <= 20


def leader_of(bootstrap: str, topic: str, partition: int = 0) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return metadata.topics[topic].partitions[partition].leader


def test_three_broker_cluster_loses_a_leader_under_load_and_loses_no_event(
    app_stack, kafka_cluster
):
    bootstrap = kafka_cluster.bootstrap
    create_topics(bootstrap, replication=3)
    counts = [services.count_create(name=f"replicated-{n}") for n in range(20)]
    relay = app_stack("relay", *RELAY_ARGS, kafka=bootstrap)
    consumer = app_stack("consume", *CONSUMER_ARGS, kafka=bootstrap)

    def write(n: int) -> None:
        services.count_increment(count_id=counts[n % len(counts)].id, delta=1)

    with reporting("kafka-cluster-broker-killed") as measured:
        wait_for(lambda: read_model_state() == database_truth(), 60, "the first events")
        value_topic = f"{settings.KAFKA_TOPIC_PREFIX}{events.COUNT_VALUE_UPDATED}"
        victim = leader_of(bootstrap, value_topic)
        measured.update(brokers=3, replication=3, min_insync_replicas=2, killed_broker=victim)
        with SteadyLoad(write, per_second=100) as writes:
            time.sleep(3)
            crash_broker(kafka_cluster.nodes[victim - 1])  # a partition leader
            killed = time.monotonic()
            time.sleep(8)
        load_ended = time.monotonic()
        measured.update(writes=writes.done, failed_writes=len(writes.errors))
        survivors = ",".join(
            f"127.0.0.1:{n.port}" for n in kafka_cluster.nodes if n.node_id != victim
        )
        wait_for(lambda: pending_count() == 0, 60, "the relay to publish everything")
        wait_for(lambda: read_model_state() == database_truth(), 60, "the dashboard to catch up")
        measured.update(
            all_delivered_and_applied_after_kill_s=round(time.monotonic() - killed, 2),
            all_delivered_and_applied_after_load_s=round(time.monotonic() - load_ended, 2),
        )
        measured["new_leader"] = leader_of(survivors, value_topic)

        figures = audit(outbox_in_commit_order(), survivors)
        measured.update(figures)
        assert writes.errors == []
        assert figures["lost"] == 0
        assert Count.objects.count() == 20
        assert relay.alive and consumer.alive
