"""Poison messages go to the dead-letter topic, with headers saying where and why.

A poison message counts as handled only once Kafka acknowledges its dead letter: until
then its batch's offsets stay uncommitted, and a refused write (no permission, too large,
an outage longer than the producer's message timeout) is retried with backoff.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from counts.events import now_ms
from dashboard.consuming import metrics
from dashboard.consuming.batch import Poison
from dashboard.events import PoisonMessage
from infra.kafka import QUIET_LOG, backoff, producer_config

logger = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 10.0
# A poison message is re-sent whole. Another client may have written it in a compressed
# batch that holds a value over librdkafka's default 1 MB message limit, which this
# producer would refuse locally on every retry and so stall its partition: it takes what a
# consumer can receive (librdkafka's receive.message.max.bytes) and, with Django's producer
# settings, compresses as the relay does, so that only the dead-letter topic's own limit
# can refuse it.
_REQUIRED = {"acks": "all", "message.max.bytes": 100_000_000, **QUIET_LOG}


class DeadLetterWriter:
    """Writes poison messages to `topic`: the original key, value and headers, plus dlq_*."""

    def __init__(
        self,
        topic: str,
        group: str,
        *,
        running: Callable[[], bool],
        error_cb: Callable | None = None,
    ) -> None:
        self.topic = topic
        self.group = group
        self._running = running
        self._producer = Producer(
            producer_config(_REQUIRED, error_cb=error_cb),
            logger=logger,
        )

    def send(self, dead: list[Poison]) -> bool:
        """Park poison messages; True once Kafka has acknowledged them all, False if asked
        to stop first (their offsets must then stay uncommitted)."""
        for message, error in dead:
            logger.error("dead-lettering %s: %s", _where(message), error)
        pending = dead
        for attempt in itertools.count(1):
            refused = self._write(pending)
            if refused is None:
                return False
            if not refused:
                return True
            if not self._running():
                return False
            delay = backoff(attempt, base=0.5, cap=RETRY_MAX_SECONDS)
            for (message, _), reason in refused:
                logger.error(
                    "cannot dead-letter %s, retrying in %.1fs: %s", _where(message), delay, reason
                )
            self._sleep(delay)
            pending = [poison for poison, _ in refused]

    def _write(self, dead: list[Poison]) -> list[tuple[Poison, KafkaError]] | None:
        """Produce and wait for every delivery report; return the refused ones (None if
        asked to stop while Kafka had not answered yet)."""
        refused: list[tuple[Poison, KafkaError]] = []

        def report(poison: Poison, failure: KafkaError | None) -> None:
            if failure is None:
                metrics.DEAD_LETTERS.labels(poison[1].reason).inc()
            else:
                metrics.DEAD_LETTER_ERRORS.inc()
                refused.append((poison, failure))

        for poison in dead:
            message, error = poison
            try:
                self._producer.produce(
                    self.topic,
                    key=message.key(),
                    value=message.value(),
                    headers=[*(message.headers() or []), *self._failure_headers(message, error)],
                    on_delivery=lambda failure, _, poison=poison: report(poison, failure),
                )
            except KafkaException as exc:  # refused before sending, e.g. larger than allowed
                report(poison, exc.args[0])
        while self._producer.flush(5) > 0:
            if not self._running():
                return None
            logger.warning("dead-letter topic unreachable, still trying")
        return refused

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake within 0.1 s of a stop: SIGTERM must not wait out a backoff."""
        deadline = time.monotonic() + seconds
        while self._running() and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _failure_headers(self, message: Message, error: PoisonMessage) -> list[tuple[str, str]]:
        return [
            ("dlq_reason", error.reason),
            ("dlq_error", error.detail[:1000]),
            ("dlq_source_topic", message.topic()),
            ("dlq_source_partition", str(message.partition())),
            ("dlq_source_offset", str(message.offset())),
            ("dlq_consumer_group", self.group),
            ("dlq_failed_at", str(now_ms())),
        ]


def _where(message: Message) -> str:
    return f"{message.topic()}[{message.partition()}]@{message.offset()}"
