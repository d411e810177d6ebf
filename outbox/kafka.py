"""Kafka clients built from Django settings (bootstrap servers, security, tuning)."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic
from django.conf import settings

from outbox.services import topic_name


def client_config(**overrides) -> dict:
    """librdkafka settings shared by producers, consumers and the admin client."""
    return {**settings.KAFKA_CLIENT_CONFIG, **overrides}


def admin_client() -> AdminClient:
    return AdminClient(client_config())


def topic_configs() -> dict[str, str]:
    return {
        "retention.ms": str(settings.KAFKA_TOPIC_RETENTION_MS),
        "retention.bytes": str(settings.KAFKA_TOPIC_RETENTION_BYTES),
        "min.insync.replicas": str(settings.KAFKA_TOPIC_MIN_INSYNC_REPLICAS),
        "cleanup.policy": "delete",
    }


def ensure_topics(logical_names: list[str], timeout: float = 30) -> dict[str, str]:
    """Create missing topics with the configured layout; return name -> "created"/"exists"."""
    admin = admin_client()
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
    return {name: "exists" if name in existing else "created" for name in sorted(wanted)}
