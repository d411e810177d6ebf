"""The dashboard consumer's poll loop: Kafka count events -> cache invalidation and the read
model, with the group's rebalance callbacks.

At least once, idempotent: a batch's offsets are committed only after its effects are in
Redis and its poison messages on the dead-letter topic (commits.py). Effects are keyed by
the per-count version, so a redelivered, duplicated or late event changes nothing
(read_model.py).

Latency: `poll()` blocks until the first message of a batch arrives, then `consume(timeout=0)`
takes whatever else is already fetched, so a lone event is handled at once and a burst is
handled in batches, coalesced per count (batch.py).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from counts.events import TOPICS
from dashboard.consuming import metrics
from dashboard.consuming.batch import BatchApplier, parse_batch
from dashboard.consuming.commits import OffsetCommits
from dashboard.consuming.dead_letters import DeadLetterWriter
from dashboard.consuming.replay import ReplayProgress, StartAt, prepare_replay
from dashboard.consuming.reporting import ConsumerReporting
from infra.kafka import QUIET_LOG, KafkaErrorLog, backoff, client_config
from infra.topics import ensure_topics, managed_topics, topic_name

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 0.5
RETRY_MAX_SECONDS = 2.0
# Redis runs one script at a time: about 500 updates keep each batch's script near 10 ms,
# so catching up on a backlog never stalls the API's cache reads for long.
BATCH_SIZE = 500
_STORES_DOWN = (RedisError, DatabaseError)


def consumer_config(*, report_partition_ends: bool, **callbacks) -> dict:
    instance_id = settings.KAFKA_CONSUMER_INSTANCE_ID
    return client_config(
        **{
            **QUIET_LOG,
            "group.id": settings.KAFKA_CONSUMER_GROUP,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": report_partition_ends,
            # A killed consumer's partitions move to a live one within seconds.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            # A static member rejoins after a broker restart without waiting out its session.
            **({"group.instance.id": instance_id} if instance_id else {}),
        },
        **callbacks,
    )


class DashboardConsumer:
    """One member of the consumer group. `run()` until `stop()` (or caught up, with `once`)."""

    def __init__(
        self,
        *,
        batch_size: int = BATCH_SIZE,
        start_at: StartAt | None = None,
        once: bool = False,
    ):
        self.batch_size = batch_size
        self.start_at = start_at
        self.once = once
        self.topics = {topic_name(logical): logical for logical in TOPICS}
        self._running = True
        self._assigned: set[tuple[str, int]] = set()
        self._at_end: set[tuple[str, int]] = set()
        self._progress: ReplayProgress | None = None
        self._applier = BatchApplier()
        self._reporting = ConsumerReporting(self.topics)
        # One error log for both clients: an outage is told once, not by each of them.
        errors = KafkaErrorLog(logger, "Kafka")
        self._consumer = Consumer(
            consumer_config(report_partition_ends=once, error_cb=errors), logger=logger
        )
        self._commits = OffsetCommits(self._consumer)
        self._dead_letters = DeadLetterWriter(
            topic_name(settings.KAFKA_DEAD_LETTER_TOPIC),
            settings.KAFKA_CONSUMER_GROUP,
            running=lambda: self._running,
            error_cb=errors,
        )

    # --- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        try:
            if self._topics_ready():
                self._consume()
        finally:
            self._commits.commit(asynchronous=False)
            self._consumer.close()
            if self._progress is not None:
                self._progress.close()
        logger.info("consumer stopped after %d events", self._reporting.processed)

    def _topics_ready(self) -> bool:
        """Create missing topics; waits for Kafka (False if stopped before it answered)."""
        ensure = partial(ensure_topics, managed_topics(), timeout=3)
        return self._with_retries(ensure, "reach Kafka", KafkaException) is not None

    def _consume(self) -> None:
        if self.start_at is not None:
            prepare_replay(self.start_at)
        self._consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        group = settings.KAFKA_CONSUMER_GROUP
        logger.info("consuming %s as group %s", ", ".join(self.topics), group)
        while self._running and not (self.once and self._caught_up()):
            batch = self._next_batch()
            self._handle(batch)
            self._commits.commit_if_due(idle=not batch)
            self._reporting.report(self._consumer, self._assigned)

    def _caught_up(self) -> bool:
        return bool(self._assigned) and self._at_end >= self._assigned

    def _next_batch(self) -> list[Message]:
        # With offsets left to commit, wait no longer than until their commit is due.
        due = self._commits.seconds_until_due()
        timeout = max(0.0, due) if self._commits.uncommitted else POLL_SECONDS
        first = self._consumer.poll(min(timeout, POLL_SECONDS))
        if first is None:
            return []
        return [first, *self._consumer.consume(self.batch_size - 1, timeout=0)]

    # --- rebalances ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.start_at is not None:
            self.start_at.offsets(consumer, partitions)
            self._progress = ReplayProgress(consumer, partitions)
            self.start_at = None  # later rebalances resume from the committed offsets
        consumer.assign(partitions)
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        logger.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commits.commit(asynchronous=False)
        self._forget(partitions)
        logger.info("revoked %s (offsets committed)", _names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        logger.warning("lost %s; their uncommitted events will be redelivered", _names(partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._assigned.discard(key)
            self._at_end.discard(key)
        self._commits.forget(partitions)
        self._reporting.forget(partitions)

    # --- one batch -------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        records = self._records(messages)
        if not records:
            return
        started = time.perf_counter()
        parsed = parse_batch(records, self.topics)
        applied = self._with_retries(
            lambda: self._applier.apply(parsed),
            "apply a batch",
            _STORES_DOWN,
            metrics.REDIS_ERRORS,
        )
        if applied is None:
            return  # stopping while Redis is down: uncommitted, so redelivered after restart
        if not self._dead_letters.send(parsed.poison + applied.poison):
            return  # stopping while Kafka refuses them: uncommitted, so redelivered
        self._commits.mark_done(records)
        self._reporting.account(applied.events, records, time.perf_counter() - started)
        if self._progress is not None and self._progress.advance(len(records)):
            self._progress = None

    def _records(self, messages: list[Message]) -> list[Message]:
        """The data messages; partition-end markers update what has been caught up."""
        records = []
        for message in messages:
            where, error = (message.topic(), message.partition()), message.error()
            if error is None:
                records.append(message)
                self._at_end.discard(where)
            elif error.code() == KafkaError._PARTITION_EOF:
                self._at_end.add(where)
            elif error.fatal():
                raise KafkaException(error)
            else:
                logger.warning("kafka: %s", error)
        return records

    def _with_retries(
        self,
        effect: Callable[[], T],
        what: str,
        errors: type | tuple[type, ...],
        failures: metrics.Counter | None = None,
    ) -> T | None:
        """Run `effect` until it succeeds, backing off while it raises `errors`: nothing is
        skipped while Redis, PostgreSQL or Kafka are away. None if asked to stop meanwhile."""
        for attempt in itertools.count(1):
            try:
                return effect()
            except errors as exc:
                if failures is not None:
                    failures.inc()
                if not self._running:
                    return None
                delay = backoff(attempt, base=0.05, cap=RETRY_MAX_SECONDS)
                logger.warning("cannot %s, retrying in %.2fs: %s", what, delay, exc)
                close_old_connections()
                time.sleep(delay)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
