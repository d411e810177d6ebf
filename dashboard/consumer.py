"""The dashboard consumer: Kafka count events -> cache invalidation and the read model.

At least once, idempotent: a batch's offsets are committed only after its effects are in
Redis (and its poison messages on the dead-letter topic). Effects are keyed by the per-count
version, so a redelivered, duplicated or late event changes nothing (read_model.py).

Latency: `poll()` blocks until the first message of a batch arrives, then `consume(timeout=0)`
takes whatever else is already fetched, so a lone event is handled at once and a burst is
handled in batches, coalesced per count, in one Redis round trip.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError
from tqdm import tqdm

from counts import cache
from counts.events import TOPICS, now_ms
from counts.models import Count
from dashboard import metrics, read_model
from dashboard.events import CountEvent, PoisonMessage, parse_event
from dashboard.selectors import relay_backlog
from infra.kafka import QUIET_LOG, KafkaErrorLog, backoff, client_config
from infra.topics import ensure_topics, managed_topics, topic_name
from outbox.selectors import published_keys

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 0.5
RETRY_MAX_SECONDS = 2.0
REPORT_EVERY_SECONDS = 1.0
BACKLOG_RETRY_SECONDS = 30.0
KNOWN_IDS_LIMIT = 100_000
# Redis runs one script at a time: about 500 updates keep each batch's script near 10 ms,
# so catching up on a backlog never stalls the API's cache reads for long.
BATCH_SIZE = 500
# Offsets are committed after the effects, at most this often and at the latest this long
# after the effects: every commit is a write to the broker's offsets log, and a crash only
# replays what came since the last one (idempotent, see docs/caching.md).
COMMIT_INTERVAL_SECONDS = 0.2
_STORES_DOWN = (RedisError, DatabaseError)


@dataclass(frozen=True)
class StartAt:
    """Where a rebuild starts: the beginning of the log, or the first event at/after a time."""

    timestamp: datetime | None = None

    def offsets(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.timestamp is None:
            for tp in partitions:
                tp.offset = OFFSET_BEGINNING
            return
        ms = int(self.timestamp.timestamp() * 1000)
        wanted = [TopicPartition(tp.topic, tp.partition, ms) for tp in partitions]
        found = consumer.offsets_for_times(wanted, timeout=30)
        for tp, hit in zip(partitions, found, strict=True):
            tp.offset = hit.offset if hit.offset >= 0 else OFFSET_END


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
        self.dead_letter_topic = topic_name(settings.KAFKA_DEAD_LETTER_TOPIC)
        self._running = True
        self._assigned: set[tuple[str, int]] = set()
        self._at_end: set[tuple[str, int]] = set()
        self._done: dict[tuple[str, int], int] = {}  # next offset to commit
        self._uncommitted = False  # effects done whose offsets are not committed yet
        self._next_commit = 0.0
        self._known_ids: set[str] = set()
        self._processed = 0
        self._last_report = (time.monotonic(), 0)
        self._backlog_retry_at = 0.0
        self._progress: tqdm | None = None
        # One error log for both clients: an outage is told once, not by each of them.
        errors = KafkaErrorLog(logger, "Kafka")
        self._consumer = Consumer(
            consumer_config(report_partition_ends=once, error_cb=errors), logger=logger
        )
        self._producer = Producer(
            client_config(**{"acks": "all", **QUIET_LOG}, error_cb=errors), logger=logger
        )

    # --- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        try:
            if self._topics_ready():
                self._consume()
        finally:
            self._commit(asynchronous=False)
            self._consumer.close()
            if self._progress is not None:
                self._progress.close()
        logger.info("consumer stopped after %d events", self._processed)

    def _topics_ready(self) -> bool:
        """Create missing topics; waits for Kafka (False if stopped before it answered)."""
        ensure = partial(ensure_topics, managed_topics(), timeout=3)
        return self._with_retries(ensure, "reach Kafka", KafkaException) is not None

    def _consume(self) -> None:
        if self.start_at is not None:
            self._prepare_replay()
        self._consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        logger.info("consuming %s as group %s", ", ".join(self.topics), self._group)
        while self._running and not (self.once and self._caught_up()):
            batch = self._next_batch()
            self._handle(batch)
            self._commit_if_due(idle=not batch)
            self._report()

    def _prepare_replay(self) -> None:
        """From the beginning: rebuild the read model from scratch. From a time: re-apply
        on top of it (equal versions overwrite differing content, which repairs drift)."""
        if self.start_at.timestamp is None:
            read_model.reset()
        logger.info("replay: dropped %d cache entries", cache.drop_all_entries())

    @property
    def _group(self) -> str:
        return settings.KAFKA_CONSUMER_GROUP

    def _caught_up(self) -> bool:
        return bool(self._assigned) and self._at_end >= self._assigned

    def _next_batch(self) -> list[Message]:
        # With offsets left to commit, wait no longer than until their commit is due.
        due = self._next_commit - time.monotonic()
        timeout = max(0.0, due) if self._uncommitted else POLL_SECONDS
        first = self._consumer.poll(min(timeout, POLL_SECONDS))
        if first is None:
            return []
        return [first, *self._consumer.consume(self.batch_size - 1, timeout=0)]

    # --- rebalances ------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.start_at is not None:
            self.start_at.offsets(consumer, partitions)
            self._start_progress(consumer, partitions)
            self.start_at = None  # later rebalances resume from the committed offsets
        consumer.assign(partitions)
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        logger.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(asynchronous=False)
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
            self._done.pop(key, None)
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(tp.topic, str(tp.partition))

    def _start_progress(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        total = 0
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            start = {OFFSET_BEGINNING: low, OFFSET_END: high}.get(tp.offset, tp.offset)
            total += high - start
        # disable=None: a bar on a terminal, nothing in logs and pipes.
        self._progress = tqdm(total=total, unit="event", desc="replay", disable=None)

    # --- one batch -------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        records = self._records(messages)
        if not records:
            return
        started = time.perf_counter()
        parsed, dead = self._parse(records)
        outcome = self._with_retries(
            lambda: self._apply(parsed), "apply a batch", _STORES_DOWN, metrics.REDIS_ERRORS
        )
        if outcome is None:
            return  # stopping while Redis is down: uncommitted, so redelivered after restart
        unknown, events = outcome
        dead += [
            (m, PoisonMessage("unknown-count", e.count_id))
            for m, e in parsed
            if e.count_id in unknown
        ]
        if not self._send_dead_letters(dead):
            return  # stopping while Kafka refuses them: uncommitted, so redelivered
        for message in records:
            self._done[(message.topic(), message.partition())] = message.offset() + 1
        self._uncommitted = True
        self._account(events, records, time.perf_counter() - started)

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

    def _parse(self, records: list[Message]) -> tuple[list, list]:
        parsed, dead = [], []
        for message in records:
            try:
                logical_topic = self.topics[message.topic()]
                event = parse_event(logical_topic, message.key(), message.value())
                parsed.append((message, event))
            except PoisonMessage as exc:
                dead.append((message, exc))
        return parsed, dead

    def _apply(self, parsed: list[tuple[Message, CountEvent]]) -> tuple[set[str], list[CountEvent]]:
        """Apply the events of counts that exist; return the unknown counts and the applied."""
        unknown = self._unknown_counts(event for _, event in parsed)
        applied = [event for _, event in parsed if event.count_id not in unknown]
        read_model.apply_events(applied)
        return unknown, applied

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

    def _unknown_counts(self, events: Iterable[CountEvent]) -> set[str]:
        """Ids of counts that never existed: events about them are dead-lettered.

        Only ids this process has not seen yet cost a query. A count missing from the
        database may just have been deleted (its deletion may even be on its way on the
        other topic); its events are genuine if the outbox has them or the read model knows
        the count, and applying them is harmless: versions and tombstones settle it.
        """
        events = list(events)
        deleted = {e.count_id for e in events if e.action == "deleted"}
        fresh = {e.count_id for e in events} - deleted - self._known_ids
        if not fresh:
            return set()
        existing = {
            str(pk) for pk in Count.objects.filter(pk__in=fresh).values_list("pk", flat=True)
        }
        if len(self._known_ids) > KNOWN_IDS_LIMIT:
            self._known_ids.clear()
        self._known_ids |= existing
        missing = fresh - existing
        missing -= read_model.seen_counts(missing)
        if missing:
            event_ids = [e.event_id for e in events if e.count_id in missing]
            missing -= published_keys(event_ids)
        return missing

    def _send_dead_letters(self, dead: list) -> bool:
        """Park poison messages; True once Kafka has them all (False if stopping first)."""
        for message, error in dead:
            logger.error(
                "dead-lettering %s[%d]@%d: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                error,
            )
            self._producer.produce(
                self.dead_letter_topic,
                key=message.key(),
                value=message.value(),
                headers=[*(message.headers() or []), *self._failure_headers(message, error)],
            )
            metrics.DEAD_LETTERS.labels(error.reason).inc()
        while dead and self._producer.flush(5) > 0:
            if not self._running:
                return False
            logger.warning("dead-letter topic unreachable, still trying")
        return True

    def _failure_headers(self, message: Message, error: PoisonMessage) -> list[tuple[str, str]]:
        return [
            ("dlq_reason", error.reason),
            ("dlq_error", error.detail[:1000]),
            ("dlq_source_topic", message.topic()),
            ("dlq_source_partition", str(message.partition())),
            ("dlq_source_offset", str(message.offset())),
            ("dlq_consumer_group", self._group),
            ("dlq_failed_at", str(now_ms())),
        ]

    def _commit_if_due(self, *, idle: bool) -> None:
        if self._uncommitted and (idle or time.monotonic() >= self._next_commit):
            self._commit(asynchronous=True)

    def _commit(self, *, asynchronous: bool) -> None:
        self._uncommitted = False
        self._next_commit = time.monotonic() + COMMIT_INTERVAL_SECONDS
        if not self._done:
            return
        offsets = [TopicPartition(t, p, offset) for (t, p), offset in self._done.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:  # e.g. a rebalance took the partitions: redelivered
            logger.warning("commit failed, events will be redelivered: %s", exc)

    # --- figures ---------------------------------------------------------------------

    def _account(self, events: list[CountEvent], records: list[Message], seconds: float) -> None:
        now = now_ms()
        for event in events:
            metrics.EVENT_AGE.observe(max(0, now - event.timestamp) / 1000)
        for topic, events_on_topic in Counter(m.topic() for m in records).items():
            metrics.EVENTS.labels(self.topics[topic]).inc(events_on_topic)
        metrics.BATCH_SECONDS.observe(seconds)
        self._processed += len(records)
        if self._progress is not None:
            self._progress.update(len(records))
            if self._progress.n >= self._progress.total:
                self._progress.close()
                self._progress = None
                logger.info("replay: caught up with the log; consuming live")

    def _report(self) -> None:
        """Once a second: lag gauges, events/s, and the figures the dashboard shows."""
        now = time.monotonic()
        since, processed_then = self._last_report
        if now - since < REPORT_EVERY_SECONDS:
            return
        rate = (self._processed - processed_then) / (now - since)
        self._last_report = (now, self._processed)
        stats = {"lag": self._lag(), "events_per_second": round(rate, 1), "at": now_ms()}
        stats |= self._relay_backlog()
        try:
            read_model.publish_consumer_stats(stats)
        except RedisError as exc:
            logger.warning("cannot publish consumer figures: %s", exc)

    def _relay_backlog(self) -> dict[str, float]:
        """The outbox backlog, published here once for every web process's live streams
        (which then read no database). After a failure it is left out for a while, so a
        PostgreSQL outage does not slow the consumer down once a second."""
        if time.monotonic() < self._backlog_retry_at:
            return {}
        try:
            return relay_backlog()
        except DatabaseError as exc:
            logger.warning("cannot read the relay backlog for the dashboard: %s", exc)
            close_old_connections()
            self._backlog_retry_at = time.monotonic() + BACKLOG_RETRY_SECONDS
            return {}

    def _lag(self) -> int:
        assigned = [TopicPartition(t, p) for t, p in self._assigned]
        total = 0
        for tp in self._consumer.position(assigned) if assigned else []:
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            lag = max(0, high - tp.offset) if high >= 0 and tp.offset >= 0 else 0
            metrics.LAG.labels(tp.topic, str(tp.partition)).set(lag)
            total += lag
        return total


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
