"""countstream's topics: their names, which ones exist, and their layout in Kafka.

The wanted layout (partitions, replication, retention, cleanup policy, min ISR) comes from
settings; docs/operations.md says why the defaults are what they are (CA-710A, CA-710B).
Apps name the topics they own with `register_topics()` (in their AppConfig.ready()), so
`manage.py kafka_topics` manages them without knowing any domain.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
    TopicMetadata,
)
from django.conf import settings

from infra.kafka import admin_client

# Logical topic names, or callables returning one (a name read from settings at use time).
_REGISTERED: list[str | Callable[[], str]] = []


def register_topics(*names: str | Callable[[], str]) -> None:
    """Add topics that `kafka_topics ensure` creates and `describe` shows."""
    _REGISTERED.extend(name for name in names if name not in _REGISTERED)


def managed_topics() -> list[str]:
    """Every registered topic's logical name, in registration order."""
    return [name() if callable(name) else name for name in _REGISTERED]


def topic_name(logical_name: str) -> str:
    """The physical topic for a logical one (KAFKA_TOPIC_PREFIX lets environments share Kafka)."""
    return f"{settings.KAFKA_TOPIC_PREFIX}{logical_name}"


def topic_configs() -> dict[str, str]:
    return {
        "retention.ms": str(settings.KAFKA_TOPIC_RETENTION_MS),
        "retention.bytes": str(settings.KAFKA_TOPIC_RETENTION_BYTES),
        "min.insync.replicas": str(settings.KAFKA_TOPIC_MIN_INSYNC_REPLICAS),
        "cleanup.policy": "delete",
    }


def ensure_topics(
    logical_names: list[str], timeout: float = 30, admin: AdminClient | None = None
) -> dict[str, str]:
    """Create missing topics with the configured layout; return name -> "created"/"exists"."""
    admin = admin or admin_client()
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = {topic_name(name) for name in logical_names}
    missing = [
        NewTopic(
            name,
            num_partitions=settings.KAFKA_TOPIC_PARTITIONS,
            replication_factor=settings.KAFKA_TOPIC_REPLICATION_FACTOR,
            config=topic_configs(),
        )
        for name in sorted(wanted - existing)
    ]
    for future in (
        admin.create_topics(missing, operation_timeout=timeout).values() if missing else []
    ):
        future.result()
    _wait_until_served(admin, [topic.topic for topic in missing], timeout)
    return {name: "exists" if name in existing else "created" for name in sorted(wanted)}


def _wait_until_served(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once every partition of new topics answers: a broker learns of them a bit later."""
    deadline = time.monotonic() + timeout
    while names:  # nothing created, nothing to wait for
        try:
            topics = admin.list_topics(timeout=timeout).topics
            tps = [TopicPartition(name, p) for name in names for p in topics[name].partitions]
            _end_offsets(admin, tps, timeout)
            return
        except (KafkaException, KeyError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- Drift: an existing topic that differs from settings ---------------------------------


@dataclass(frozen=True)
class Drift:
    topic: str
    setting: str
    actual: str
    wanted: str
    fix: str  # what would repair it

    def __str__(self) -> str:
        wanted = f"settings want {self.wanted}"
        return f"{self.topic}: {self.setting} is {self.actual}, {wanted} ({self.fix})"


@dataclass
class LayoutReport:
    states: dict[str, str]  # topic -> created / exists
    changed: list[str] = field(default_factory=list)  # what this run repaired
    drift: list[Drift] = field(default_factory=list)  # what still differs


def _topic_configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict]:
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    return {resource.name: future.result() for resource, future in futures.items()}


def _topic_drift(admin: AdminClient, names: list[str], timeout: float) -> list[Drift]:
    """How these existing topics differ from the layout in settings."""
    topics = admin.list_topics(timeout=timeout).topics
    configs = _topic_configs(admin, names, timeout)
    drift = []
    for name in names:
        partitions = topics[name].partitions
        count, wanted_count = len(partitions), settings.KAFKA_TOPIC_PARTITIONS
        if count < wanted_count:
            drift.append(
                Drift(name, "partitions", str(count), str(wanted_count), "--increase-partitions")
            )
        elif count > wanted_count:
            fix = "Kafka cannot remove partitions; raise KAFKA_TOPIC_PARTITIONS or recreate"
            drift.append(Drift(name, "partitions", str(count), str(wanted_count), fix))
        replicas = len(partitions[0].replicas)
        if replicas != settings.KAFKA_TOPIC_REPLICATION_FACTOR:
            fix = "reassign partitions with kafka-reassign-partitions"
            wanted = str(settings.KAFKA_TOPIC_REPLICATION_FACTOR)
            drift.append(Drift(name, "replication factor", str(replicas), wanted, fix))
        for key, wanted in topic_configs().items():
            actual = configs[name][key].value
            if actual != wanted:
                drift.append(Drift(name, key, actual, wanted, "--alter-configs"))
    return drift


def ensure_topic_layout(
    logical_names: list[str],
    *,
    increase_partitions: bool = False,
    alter_configs: bool = False,
    timeout: float = 30,
) -> LayoutReport:
    """Create missing topics, then repair what the flags allow and report what still differs.

    Partitions are only ever added on request: keys hash onto the new count, so from then
    on a count's events land on another partition than its older ones (order per count
    holds only for events written after the change).
    """
    admin = admin_client()
    report = LayoutReport(states=ensure_topics(logical_names, timeout, admin))
    allowed = {"--increase-partitions": increase_partitions, "--alter-configs": alter_configs}
    for item in _topic_drift(admin, list(report.states), timeout):
        if allowed.get(item.fix):
            report.changed.append(_repair(admin, item))
        else:
            report.drift.append(item)
    return report


def _repair(admin: AdminClient, item: Drift) -> str:
    """Add partitions or set a config as settings want; return what changed."""
    if item.setting == "partitions":
        admin.create_partitions([NewPartitions(item.topic, int(item.wanted))])[item.topic].result()
    else:
        entry = ConfigEntry(item.setting, item.wanted, incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, item.topic, incremental_configs=[entry])
        admin.incremental_alter_configs([resource])[resource].result()
    return f"{item.topic}: {item.setting} {item.actual} -> {item.wanted}"


# --- Describe: partitions, leaders, configs, end offsets, consumer group lag --------------


@dataclass(frozen=True)
class PartitionState:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    end_offset: int


@dataclass(frozen=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    lag: int


@dataclass
class TopicState:
    name: str
    exists: bool
    configs: dict[str, str] = field(default_factory=dict)
    partitions: list[PartitionState] = field(default_factory=list)
    lags: list[GroupLag] = field(default_factory=list)


def _end_offsets(admin: AdminClient, tps: list[TopicPartition], timeout: float) -> dict:
    if not tps:
        return {}
    futures = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout)
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


def _shown_configs(entries: dict) -> dict[str, str]:
    """The settings countstream manages, plus anything else set on the topic itself."""
    return {
        key: entry.value
        for key, entry in sorted(entries.items())
        if key in topic_configs() or not entry.is_default
    }


def _committed_offsets(admin: AdminClient, topics: set[str], timeout: float) -> dict:
    """(group, topic, partition) -> committed offset, for every group that reads `topics`."""
    groups = admin.list_consumer_groups(request_timeout=timeout).result().valid
    requests = {
        listing.group_id: admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(listing.group_id)], request_timeout=timeout
        )[listing.group_id]
        for listing in groups
    }
    committed = {}
    for group, future in requests.items():
        try:
            partitions = future.result().topic_partitions
        except KafkaException:  # the group went away since it was listed
            continue
        for tp in partitions:
            if tp.topic in topics:
                committed[(group, tp.topic, tp.partition)] = tp.offset
    return committed


def describe_topics(names: list[str], timeout: float = 30) -> list[TopicState]:
    admin = admin_client()
    metadata = admin.list_topics(timeout=timeout).topics
    present = [name for name in names if name in metadata]
    if not present:
        return [TopicState(name, exists=False) for name in names]
    configs = _topic_configs(admin, present, timeout)
    tps = [TopicPartition(name, p) for name in present for p in metadata[name].partitions]
    ends = _end_offsets(admin, tps, timeout)
    committed = _committed_offsets(admin, set(present), timeout)
    return [
        _topic_state(name, metadata[name], configs[name], ends, committed)
        if name in metadata
        else TopicState(name, exists=False)
        for name in names
    ]


def _topic_state(
    name: str, metadata: TopicMetadata, configs: dict, ends: dict, committed: dict
) -> TopicState:
    state = TopicState(name, exists=True, configs=_shown_configs(configs))
    for number, part in sorted(metadata.partitions.items()):
        state.partitions.append(
            PartitionState(
                number, part.leader, list(part.replicas), list(part.isrs), ends[(name, number)]
            )
        )
    for (group, topic, number), offset in sorted(committed.items()):
        if topic == name:
            done = offset if offset >= 0 else None
            state.lags.append(
                GroupLag(group, topic, number, done, ends[(name, number)] - (done or 0))
            )
    return state
