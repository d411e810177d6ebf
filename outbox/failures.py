"""The relay's failure policy: what a failed delivery does to its row, its key and the relay.

Kafka's errors are told apart by their code (confluent-kafka's delivery reports carry no
retriable or fatal flag):

- `refused`: Kafka refuses the message itself (too large, invalid, corrupt). Only its key
  is held back, with a backoff of its own; after `max_attempts` refusals the row is parked.
- `denied`: the relay may not write (authorization, authentication). Its key is held back
  with a backoff; the row is never parked and its `attempts` do not grow: the fix is an
  ACL, not the message.
- `fatal`: the producer can no longer be used (librdkafka raised a fatal error). The relay
  starts a new producer and pauses; nothing is parked.
- `offline`: the message's partition has no leader (its broker is down and no replica
  took over), so the relay held it back or dropped it unsent (`_PURGE_QUEUE`). Only its
  key waits, rechecked every second; nothing pauses, nothing is parked.
- `transient`: everything else is the cluster's (broker down, timeouts, no leader, unknown
  topic...). The rows stay pending and the relay pauses claiming with a backoff; however
  long it lasts, nothing is parked.
"""

from __future__ import annotations

import logging
import time
from enum import Enum

import psycopg
from confluent_kafka import KafkaError

from infra.kafka import backoff
from outbox import metrics
from outbox.claims import TABLE, OutboxRow
from outbox.models import OutboxMessage
from outbox.partitions import CHECK_EVERY_S

logger = logging.getLogger(__name__)

# While the cluster fails, the relay tries again at least this often: a batch that timed out
# has already waited `message.timeout.ms`, and a longer pause only delays the drain once the
# cluster is back.
CLUSTER_PAUSE_MAX_S = 2.0

# Only a refusal counts toward parking; every failure records its error.
_RECORD_FAILURE = f"""
    UPDATE {TABLE}
       SET attempts = attempts + CASE WHEN %(refused)s THEN 1 ELSE 0 END,
           last_error = %(error)s,
           state = CASE WHEN %(refused)s AND attempts + 1 >= %(max_attempts)s
                        THEN 'parked' ELSE state END
     WHERE id = ANY(%(ids)s) AND state = 'pending'
 RETURNING id, key, state, attempts
"""


class Failure(Enum):
    TRANSIENT = "transient"
    REFUSED = "permanent"  # the metric's label, kept from before `denied` and `fatal`
    DENIED = "denied"
    FATAL = "fatal"
    OFFLINE = "offline"


# Refusals of this message: it will fail again however often it is sent.
_REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,  # CORRUPT_MESSAGE in Kafka's protocol
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_TIMESTAMP,
    KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
    KafkaError._BAD_MSG,
    KafkaError._INVALID_ARG,
}
_DENIED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION,
}


def classify(error: KafkaError) -> Failure:
    if error.fatal() or error.code() == KafkaError._FATAL:
        return Failure.FATAL
    if error.code() in _REFUSED:
        return Failure.REFUSED
    if error.code() in _DENIED:
        return Failure.DENIED
    if error.code() == KafkaError._PURGE_QUEUE:
        return Failure.OFFLINE
    return Failure.TRANSIENT


class FailurePolicy:
    """Records failed deliveries and keeps the backoffs they call for."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self.paused_until = 0.0  # monotonic time the pause after a cluster error ends
        self._cluster_failures = 0  # batches in a row with a transient or fatal error
        self._denials = 0  # batches in a row with a denied write
        self._key_retry_at: dict[str, float] = {}  # key -> monotonic time its backoff ends

    def paused(self) -> bool:
        return time.monotonic() < self.paused_until

    def keys_backing_off(self) -> set[str]:
        """Keys whose last row was refused or denied, until their backoff ends."""
        now = time.monotonic()
        self._key_retry_at = {key: end for key, end in self._key_retry_at.items() if end > now}
        return set(self._key_retry_at)

    def delivered(self) -> None:
        """A batch went through without failures: the cluster is back."""
        self._cluster_failures = self._denials = 0

    def record(self, conn: psycopg.Connection, failed: list[tuple[OutboxRow, KafkaError]]) -> bool:
        """Record the failures on their rows (parking refused ones out of attempts) and back
        off; True if the producer failed fatally and must be replaced."""
        groups: dict[tuple[str, Failure], list[int]] = {}
        for row, error in failed:
            groups.setdefault((error.str(), classify(error)), []).append(row.id)
        for (error, kind), ids in groups.items():
            metrics.PUBLISH_ERRORS.labels(kind.value).inc(len(ids))
            params = {
                "error": error,
                "refused": kind is Failure.REFUSED,
                "max_attempts": self.max_attempts,
                "ids": ids,
            }
            outcome = conn.execute(_RECORD_FAILURE, params).fetchall()
            if kind is Failure.REFUSED:
                self._back_off_refused(error, outcome)
            elif kind is Failure.DENIED:
                self._back_off_denied(error, outcome)
            elif kind is Failure.OFFLINE:
                # until their partition is checked again (Deliveries logs which are offline)
                self._hold_keys(outcome, CHECK_EVERY_S)
            else:
                self._pause_for_cluster(error, len(ids))
        return any(kind is Failure.FATAL for _, kind in groups)

    def _pause_for_cluster(self, error: str, rows: int) -> None:
        self._cluster_failures += 1
        delay = backoff(self._cluster_failures, cap=CLUSTER_PAUSE_MAX_S)
        self.paused_until = time.monotonic() + delay
        logger.warning(
            "relay: Kafka did not take %d rows (%s); they stay pending, retrying in %.1fs",
            rows,
            error,
            delay,
        )

    def _hold_keys(self, outcome: list[tuple[int, str, str, int]], delay: float) -> None:
        """Hold the keys of `outcome` back for `delay` seconds; every other key goes on."""
        until = time.monotonic() + delay
        for _row_id, key, _state, _attempts in outcome:
            self._key_retry_at[key] = until

    def _back_off_denied(self, error: str, outcome: list[tuple[int, str, str, int]]) -> None:
        """Hold the keys back: a denied topic delays only its own keys, and parks nothing."""
        self._denials += 1
        delay = backoff(self._denials, base=0.5, cap=60.0)
        self._hold_keys(outcome, delay)
        logger.error(
            "relay: Kafka denied writing %d rows (%s); they stay pending, retrying in %.1fs",
            len(outcome),
            error,
            delay,
        )

    def _back_off_refused(self, error: str, outcome: list[tuple[int, str, str, int]]) -> None:
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
