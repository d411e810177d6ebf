"""Offset commits: only after the effects, at most this often, at the latest this late.

Every commit is a write to the broker's offsets log, and a crash only replays what came
since the last one (idempotent, see docs/caching.md).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

logger = logging.getLogger(__name__)

COMMIT_INTERVAL_SECONDS = 0.2


class OffsetCommits:
    """The next offset to commit per partition, and when the next commit is due."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._done: dict[tuple[str, int], int] = {}
        self.uncommitted = False  # effects done whose offsets are not committed yet
        self._next_commit = 0.0

    def seconds_until_due(self) -> float:
        return self._next_commit - time.monotonic()

    def mark_done(self, records: list[Message]) -> None:
        """These messages' effects are made: their offsets may be committed."""
        for message in records:
            self._done[(message.topic(), message.partition())] = message.offset() + 1
        self.uncommitted = True

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._done.pop((tp.topic, tp.partition), None)

    def commit_if_due(self, *, idle: bool) -> None:
        if self.uncommitted and (idle or self.seconds_until_due() <= 0):
            self.commit(asynchronous=True)

    def commit(self, *, asynchronous: bool) -> None:
        self.uncommitted = False
        self._next_commit = time.monotonic() + COMMIT_INTERVAL_SECONDS
        if not self._done:
            return
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in self._done.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:  # e.g. a rebalance took the partitions: redelivered
            logger.warning("commit failed, events will be redelivered: %s", exc)
