"""The consumer's figures: Prometheus metrics per batch, and once a second the lag and
rate that the dashboard shows (read_model.publish_consumer_stats)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, Message, TopicPartition
from redis.exceptions import RedisError

from counts.events import now_ms
from dashboard import read_model
from dashboard.consuming import metrics
from dashboard.events import CountEvent

logger = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 1.0


class ConsumerReporting:
    """Counts what the consumer processed and reports it."""

    def __init__(self, logical_topics: Mapping[str, str]) -> None:
        self._logical_topics = logical_topics
        self.processed = 0
        self._last_report = (time.monotonic(), 0)

    def account(self, events: list[CountEvent], records: list[Message], seconds: float) -> None:
        """One batch done: `events` applied from `records` in `seconds`."""
        now = now_ms()
        for event in events:
            metrics.EVENT_AGE.observe(max(0, now - event.timestamp) / 1000)
        for topic, events_on_topic in Counter(m.topic() for m in records).items():
            metrics.EVENTS.labels(self._logical_topics[topic]).inc(events_on_topic)
        metrics.BATCH_SECONDS.observe(seconds)
        self.processed += len(records)

    def report(self, consumer: Consumer, assigned: Iterable[tuple[str, int]]) -> None:
        """Once a second: lag gauges, events/s, and the figures the dashboard shows."""
        now = time.monotonic()
        since, processed_then = self._last_report
        if now - since < REPORT_EVERY_SECONDS:
            return
        rate = (self.processed - processed_then) / (now - since)
        self._last_report = (now, self.processed)
        lag = _lag(consumer, [TopicPartition(t, p) for t, p in assigned])
        stats = {"lag": lag, "events_per_second": round(rate, 1), "at": now_ms()}
        try:
            read_model.publish_consumer_stats(stats)
        except RedisError as exc:
            logger.warning("cannot publish consumer figures: %s", exc)

    @staticmethod
    def forget(partitions: list[TopicPartition]) -> None:
        """Drop the lag gauges of partitions this consumer no longer owns."""
        for tp in partitions:
            with contextlib.suppress(KeyError):
                metrics.LAG.remove(tp.topic, str(tp.partition))


def _lag(consumer: Consumer, assigned: list[TopicPartition]) -> int:
    total = 0
    for tp in consumer.position(assigned) if assigned else []:
        _, high = consumer.get_watermark_offsets(tp, cached=True)
        lag = max(0, high - tp.offset) if high >= 0 and tp.offset >= 0 else 0
        metrics.LAG.labels(tp.topic, str(tp.partition)).set(lag)
        total += lag
    return total
