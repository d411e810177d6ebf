"""The relay's failure policy: what a failed delivery does to its row, its key and the relay.

- An error of the cluster (broker down, timeouts, no leader...) is transient: the rows stay
  pending, and the relay pauses claiming with a backoff. Such rows are never parked.
- An error of the message (Kafka refuses it, e.g. too large) holds back only its key, with
  a backoff of its own; after `max_attempts` refusals the row is parked.
"""

from __future__ import annotations

import logging
import time

import psycopg
from confluent_kafka import KafkaError

from infra.kafka import backoff
from outbox import metrics
from outbox.claims import TABLE, OutboxRow
from outbox.models import OutboxMessage

logger = logging.getLogger(__name__)

_RECORD_FAILURE = f"""
    UPDATE {TABLE}
       SET attempts = attempts + 1, last_error = %(error)s,
           state = CASE WHEN %(may_park)s AND attempts + 1 >= %(max_attempts)s
                        THEN 'parked' ELSE state END
     WHERE id = ANY(%(ids)s) AND state = 'pending'
 RETURNING id, key, state, attempts
"""
# Errors of the cluster, not of the message: retried without limit, never parked.
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.REQUEST_TIMED_OUT,
}


def is_transient(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _TRANSIENT


class FailurePolicy:
    """Records failed deliveries and keeps the backoffs they call for."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.paused_until = 0.0  # monotonic time the pause after a cluster error ends
        self._cluster_failures = 0  # batches in a row with a transient error
        self._key_retry_at: dict[str, float] = {}  # key -> monotonic time its backoff ends

    def paused(self) -> bool:
        return time.monotonic() < self.paused_until

    def keys_backing_off(self) -> set[str]:
        """Keys whose last row Kafka refused, until their backoff ends."""
        now = time.monotonic()
        self._key_retry_at = {key: end for key, end in self._key_retry_at.items() if end > now}
        return set(self._key_retry_at)

    def delivered(self) -> None:
        """A batch went through without failures: the cluster is back."""
        self._cluster_failures = 0

    def record(self, conn: psycopg.Connection, failed: list[tuple[OutboxRow, KafkaError]]) -> bool:
        """Count the failures on their rows (parking refused ones out of attempts) and back
        off; True if one of them was fatal to the producer."""
        groups: dict[tuple[str, bool], list[int]] = {}
        for row, error in failed:
            groups.setdefault((error.str(), is_transient(error)), []).append(row.id)
        for (error, transient), ids in groups.items():
            metrics.PUBLISH_ERRORS.labels("transient" if transient else "permanent").inc(len(ids))
            params = {
                "error": error,
                "may_park": not transient,
                "max_attempts": self.max_attempts,
                "ids": ids,
            }
            outcome = conn.execute(_RECORD_FAILURE, params).fetchall()
            if transient:
                self._pause_for_cluster(error, len(ids))
            else:
                self._back_off_keys(error, outcome)
        return any(error.fatal() for _, error in failed)

    def _pause_for_cluster(self, error: str, rows: int) -> None:
        self._cluster_failures += 1
        delay = backoff(self._cluster_failures)
        self.paused_until = time.monotonic() + delay
        logger.warning(
            "relay: Kafka did not take %d rows (%s); they stay pending, retrying in %.1fs",
            rows,
            error,
            delay,
        )

    def _back_off_keys(self, error: str, outcome: list[tuple[int, str, str, int]]) -> None:
        """Back off per key, so a poison row delays only its own count's later events."""
        for row_id, key, state, attempts in outcome:
            if state == OutboxMessage.State.PARKED:
                metrics.PARKED.inc()
                logger.error(
                    "relay: row #%d (key %s) parked after %d attempts: %s. Later events of "
                    "this key wait behind it until it is retried or discarded in the admin.",
                    row_id,
                    key,
                    attempts,
                    error,
                )
            else:
                delay = backoff(attempts, base=0.5, cap=60.0)
                self._key_retry_at[key] = time.monotonic() + delay
                logger.warning(
                    "relay: row #%d (key %s) failed, attempt %d/%d, retrying in %.1fs: %s",
                    row_id,
                    key,
                    attempts,
                    self.max_attempts,
                    delay,
                    error,
                )
