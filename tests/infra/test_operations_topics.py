"""`manage.py kafka_topics ensure|describe` against the real broker, on topics of their own."""

import json
import time
import uuid
from io import StringIO

import pytest
from confluent_kafka.admin import NewTopic
from django.core.management import CommandError, call_command

from infra.kafka import admin_client
from infra.topics import describe_topics, topic_configs, topic_name
from scripts.service_tools import free_ports
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack


@pytest.fixture
def topic_prefix(settings):
    """A prefix of its own per test, so a topic built wrong here disturbs no other test."""
    prefix = f"{settings.KAFKA_TOPIC_PREFIX}ops{uuid.uuid4().hex[:6]}."
    settings.KAFKA_TOPIC_PREFIX = prefix
    yield prefix
    admin = admin_client()
    ours = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for future in admin.delete_topics(ours, operation_timeout=30).values() if ours else []:
        future.result()


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("kafka_topics", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(*args: str, match: str) -> tuple[list[str], list[str]]:
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=match):
        call_command("kafka_topics", *args, stdout=out, stderr=err)
    return out.getvalue().splitlines(), err.getvalue().splitlines()


def names() -> list[str]:
    return [
        topic_name(name)
        for name in ("count-value-updated", "count-info-updated", "count-events-dead-letter")
    ]


def test_ensure_creates_the_three_topics_with_the_configured_layout(topic_prefix, settings):
    out, _ = run("ensure")
    assert sorted(out.splitlines()) == sorted(f"{name}: created" for name in names())
    for state in describe_topics(names()):
        assert len(state.partitions) == settings.KAFKA_TOPIC_PARTITIONS == 3
        assert {k: state.configs[k] for k in topic_configs()} == topic_configs()
        assert all(p.leader >= 0 and p.isr == p.replicas for p in state.partitions)
    out, _ = run("ensure")
    assert sorted(out.splitlines()) == sorted(f"{name}: exists" for name in names())


def test_ensure_reports_drift_precisely_and_repairs_only_on_request(topic_prefix):
    value, info = topic_name("count-value-updated"), topic_name("count-info-updated")
    short_retention = {**topic_configs(), "retention.ms": "60000"}
    admin = admin_client()
    futures = admin.create_topics(
        [
            NewTopic(value, num_partitions=1, replication_factor=1, config=short_retention),
            NewTopic(info, num_partitions=5, replication_factor=1, config=topic_configs()),
        ]
    )
    for future in futures.values():
        future.result()

    _, err = run_failing("ensure", match="3 topic setting")
    assert sorted(err) == [
        f"differs {info}: partitions is 5, settings want 3 (Kafka cannot remove partitions; "
        "raise KAFKA_TOPIC_PARTITIONS or recreate)",
        f"differs {value}: partitions is 1, settings want 3 (--increase-partitions)",
        f"differs {value}: retention.ms is 60000, settings want 1209600000 (--alter-configs)",
    ]

    # Repair what can be repaired; five partitions cannot shrink and stay reported.
    out, err = run_failing(
        "ensure", "--increase-partitions", "--alter-configs", match="1 topic setting"
    )
    assert err[0].startswith("warning: adding partitions moves keys")
    assert f"changed {value}: partitions 1 -> 3" in out
    assert f"changed {value}: retention.ms 60000 -> 1209600000" in out
    # The broker applies committed configs a moment later.
    assert wait_for(
        lambda: describe_topics([value])[0].configs["retention.ms"] == "1209600000",
        10,
        "the new retention.ms",
    )
    assert len(describe_topics([value])[0].partitions) == 3


def test_describe_shows_end_offsets_and_each_groups_lag(
    topic_prefix, kafka_producer, kafka_consumer_factory
):
    run("ensure")
    value = topic_name("count-value-updated")
    for _ in range(5):  # one key, so one partition holds all five
        kafka_producer.produce(value, key=b"count-1", value=b"{}")
    assert kafka_producer.flush(10) == 0

    group = f"{topic_prefix}lag-probe"
    consumer = kafka_consumer_factory(value, group=group)
    read, deadline = 0, time.monotonic() + 30
    while read < 2 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            read += 1
            consumer.commit(message=message, asynchronous=False)

    out, _ = run("describe", "--json")
    state = next(s for s in json.loads(out) if s["name"] == value)
    assert sum(p["end_offset"] for p in state["partitions"]) == 5
    [lag] = [lag for lag in state["lags"] if lag["group"] == group]
    assert (lag["committed"], lag["lag"]) == (2, 3)

    text, _ = run("describe")
    assert f"{value}: 3 partition(s)" in text
    assert f"  group {group}: lag " in text


def test_describe_says_when_topics_are_missing(topic_prefix):
    with pytest.raises(CommandError, match="missing"):
        run("describe")


def test_unreachable_kafka_is_a_clear_error(settings):
    (port,) = free_ports(1)
    settings.KAFKA_CLIENT_CONFIG = {"bootstrap.servers": f"127.0.0.1:{port}"}
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{port}"
    with pytest.raises(CommandError, match=f"Kafka at 127.0.0.1:{port}"):
        run("ensure", "--timeout", "1")
