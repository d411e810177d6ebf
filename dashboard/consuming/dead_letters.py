"""Poison messages go to the dead-letter topic, with headers saying where and why."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import Message, Producer

from counts.events import now_ms
from dashboard.consuming import metrics
from dashboard.events import PoisonMessage
from infra.kafka import QUIET_LOG, client_config

logger = logging.getLogger(__name__)


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
            client_config(**{"acks": "all", **QUIET_LOG}, error_cb=error_cb), logger=logger
        )

    def send(self, dead: list[tuple[Message, PoisonMessage]]) -> bool:
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
                self.topic,
                key=message.key(),
                value=message.value(),
                headers=[*(message.headers() or []), *self._failure_headers(message, error)],
            )
            metrics.DEAD_LETTERS.labels(error.reason).inc()
        while dead and self._producer.flush(5) > 0:
            if not self._running():
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
            ("dlq_consumer_group", self.group),
            ("dlq_failed_at", str(now_ms())),
        ]
