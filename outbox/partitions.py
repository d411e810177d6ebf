"""Partitions without a leader, and the keys that map to them.

With replication 1 (or every replica lost), a partition whose leader died has none until
that broker is back; librdkafka keeps its messages queued until `message.timeout.ms`. The
relay asks the cluster which partitions of its topics have no leader and holds back only
the keys that map to them (docs/relay.md, Failures): a key's partition is the Java
client's murmur2 hash, the producer's `murmur2_random` partitioner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from functools import lru_cache

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from infra.kafka import admin_client

logger = logging.getLogger(__name__)

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF
# How often the cluster is asked again while a partition is offline or a batch waits.
CHECK_EVERY_S = 1.0
_METADATA_TIMEOUT_S = 1.0


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's `Utils.murmur2`), as an unsigned 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[length - length % 4 :]
    if tail:
        for shift, byte in reversed(list(enumerate(tail))):
            h ^= byte << (8 * shift)
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


@lru_cache(maxsize=65_536)  # while a partition is offline, every row's key, batch after batch
def partition_for(key: str, partitions: int) -> int:
    """The partition of `key` among `partitions`, as the murmur2 partitioners place it."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class OfflinePartitions:
    """The partitions of the relay's topics without a leader, as the cluster last said.

    It asks with an admin client of its own, made at the first question: a metadata request
    that the producer sent and no broker answered would count among the producer's
    outstanding work, and `flush()` waits for it.
    """

    def __init__(self) -> None:
        self._admin: AdminClient | None = None
        self._offline: dict[str, tuple[int, frozenset[int]]] = {}  # topic -> count, offline
        self._checked = 0.0

    def __bool__(self) -> bool:
        return bool(self._offline)

    def due(self) -> bool:
        return time.monotonic() >= self._checked + CHECK_EVERY_S

    def refresh(self, topics: Collection[str]) -> None:
        """Ask the cluster; if it does not answer, every partition is out (an outage of
        the cluster, handled as such) and what was known stays."""
        self._checked = time.monotonic()
        self._admin = self._admin or admin_client()
        offline = {}
        for topic in sorted(topics):
            try:
                metadata = self._admin.list_topics(topic, timeout=_METADATA_TIMEOUT_S)
            except KafkaException:
                return
            partitions = metadata.topics[topic].partitions
            down = frozenset(p for p, meta in partitions.items() if meta.leader < 0)
            if partitions and down:
                offline[topic] = (len(partitions), down)
        if offline != self._offline:
            if offline:
                logger.warning(
                    "relay: partitions without a leader: %s; their keys wait, the others go on",
                    ", ".join(f"{t} {sorted(down)}" for t, (_, down) in offline.items()),
                )
            else:
                logger.info("relay: every partition has a leader again")
        self._offline = offline

    def partition_offline(self, topic: str, key: str) -> int | None:
        """The partition of `key` on `topic` if it has no leader, else None."""
        entry = self._offline.get(topic)
        if entry is None:
            return None
        count, down = entry
        partition = partition_for(key, count)
        return partition if partition in down else None
