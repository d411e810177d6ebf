"""Deliveries: one producer, what Kafka answered for a batch, and what that settles.

librdkafka reports failed deliveries only (`delivery.report.only.error`): once `flush()`
has emptied the producer's queue, a message without a failure report was acknowledged by
the broker with `acks=all`. A Python callback for every acknowledged message cost as much
as its `produce()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from infra import kafka
from infra.kafka import QUIET_LOG, KafkaErrorLog
from outbox import metrics
from outbox.claims import OutboxRow
from outbox.partitions import CHECK_EVERY_S, OfflinePartitions

logger = logging.getLogger(__name__)

# The delivery-age histogram times every row of a batch of up to this many rows and an even
# sample of at most this many rows of a larger one: one observation costs about as much as a
# produce(). A row's age is taken when its batch is acknowledged (no report per success).
_TIMED_PER_BATCH = 256

# A batch still unanswered after this long asks the cluster for partitions without a leader:
# their messages would wait the whole `message.timeout.ms` and hold the batch up with them.
_STALLED_AFTER_S = CHECK_EVERY_S

# Safe-by-default producer settings; Django settings may tune them...
_PRODUCER_DEFAULTS = {
    "message.timeout.ms": 30_000,
    "reconnect.backoff.max.ms": 1_000,
    # Errors come through error_cb (KafkaErrorLog), a few lines per outage.
    **QUIET_LOG,
}
# ...but never these, which the ordering and no-loss guarantees rest on.
_PRODUCER_REQUIRED = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    # Failures only: once flush() has emptied the queue, a message without a report was
    # acknowledged. A Python callback per delivered message cost as much as its produce().
    "delivery.report.only.error": True,
}


def producer_config(**callbacks) -> dict:
    """The relay's librdkafka settings: defaults, then Django's, then the non-negotiables."""
    return kafka.producer_config(_PRODUCER_REQUIRED, _PRODUCER_DEFAULTS, **callbacks)


class Deliveries:
    """The relay's producer and the failure reports of the batch in flight."""

    def __init__(self, error_log: KafkaErrorLog) -> None:
        self._error_log = error_log
        self._failed: list[tuple[tuple[str, bytes, bytes], KafkaError]] = []
        # librdkafka's fatal error, raised by produce(), poll() or flush(): the producer
        # takes nothing any more, and nothing of the batch counts as delivered.
        self.fatal_error: KafkaError | None = None
        self.producer = self._new_producer()
        self.offline = OfflinePartitions()
        self._topics: set[str] = set()  # of the batch in flight

    def renew(self) -> None:
        """A new producer, for one that failed fatally."""
        self.fatal_error = None
        self.producer = self._new_producer()

    def send(self, rows: list[OutboxRow]) -> dict[int, KafkaError]:
        """Hand `rows` to librdkafka; return the rows it refused at once, by id.

        After a row of a key is refused, the key's later rows are not produced. Rows whose
        partition has no leader are not produced either: they fail as `_PURGE_QUEUE`.
        """
        self._failed.clear()
        self._topics = {row.topic for row in rows}
        if self.offline and self.offline.due():
            self.offline.refresh(self._topics)
        held = self._held if self.offline else None  # no hash per row while all is well
        refused: dict[int, KafkaError] = {}
        refused_keys: set[str] = set()
        for row in rows:
            if self.fatal_error is not None:
                break
            if row.key in refused_keys:
                continue
            if error := (held and held(row)) or self._produce(row):
                refused[row.id] = error
                refused_keys.add(row.key)
        return refused

    def _held(self, row: OutboxRow) -> KafkaError | None:
        """The error of a row whose partition has no leader: it is not produced."""
        partition = self.offline.partition_offline(row.topic, row.key)
        if partition is None:
            return None
        reason = f"partition {partition} of {row.topic} has no leader"
        return KafkaError(KafkaError._PURGE_QUEUE, reason)

    def _produce(self, row: OutboxRow) -> KafkaError | None:
        """Hand a row to librdkafka; the error if it refuses it (e.g. larger than allowed)."""
        while True:
            try:
                self.producer.produce(row.topic, row.value, row.key, headers=row.headers)
                return None
            except BufferError:  # librdkafka's queue is full: let it drain a little
                pass
            except KafkaException as exc:
                return self._noted(exc.args[0])
            try:
                self.producer.poll(0.05)
            except KafkaException as exc:
                return self._noted(exc.args[0])

    def _noted(self, error: KafkaError) -> KafkaError:
        if error.fatal() or error.code() == KafkaError._FATAL:
            self.fatal_error = error
        return error

    def _delivery_failed(self, error: KafkaError, message: Message) -> None:
        """librdkafka's report of a message it could not deliver (the only reports we get)."""
        self._failed.append(((message.topic(), message.key(), message.value()), error))

    def failures(self, rows: list[OutboxRow]) -> dict[int, KafkaError]:
        """The rows of `rows` that Kafka did not take, by id (their event ids make topic,
        key and value unique)."""
        if self.fatal_error is not None:
            return {row.id: self.fatal_error for row in rows}
        if not self._failed:
            return {}
        by_message = {(row.topic, row.key.encode(), row.value): row.id for row in rows}
        return {
            by_message[message]: error for message, error in self._failed if message in by_message
        }

    def wait(
        self,
        stopping: Callable[[], bool],
        grace: float,
        between: Callable[[], object] = lambda: None,
    ) -> bool:
        """Wait until Kafka has answered for every message: True, or False if a stop's
        shutdown `grace` ran out first (what is still out counts as unconfirmed).
        `between` runs every 0.1 s meanwhile (the lease session's heartbeat)."""
        deadline = None
        stalled_at = time.monotonic() + _STALLED_AFTER_S
        while self._flush(0.1):
            between()
            if stopping():
                deadline = deadline or time.monotonic() + grace
                if time.monotonic() > deadline:
                    logger.warning(
                        "relay: %d deliveries unconfirmed at shutdown; their rows stay "
                        "pending and will be sent again",
                        len(self.producer),
                    )
                    self.abandon_unsent(grace)
                    return False
            elif time.monotonic() >= stalled_at and self.offline.due():
                self._drop_offline()  # a stop gives the batch up anyway, after its grace
        return True

    def _drop_offline(self) -> None:
        """If partitions of the batch have no leader, drop what librdkafka has not sent yet
        (it fails as `_PURGE_QUEUE`, the rows stay pending) so that the rest is settled now,
        not after `message.timeout.ms`. Unsent messages of healthy partitions go too; their
        keys are sent again a moment later."""
        self.offline.refresh(self._topics)
        if self.offline:
            self.producer.purge(in_queue=True, in_flight=False)

    def abandon_unsent(self, timeout: float) -> None:
        """Drop what librdkafka has not sent yet and wait (up to `timeout`) for what is on
        the wire: a relay about to lose its leases puts nothing on the wire after them."""
        self.producer.purge(in_queue=True, in_flight=False)
        self._flush(timeout)

    def _flush(self, timeout: float) -> int:
        """`flush()`; a fatal error it raises ends the wait (nothing more will come)."""
        try:
            return self.producer.flush(timeout)
        except KafkaException as exc:
            if self._noted(exc.args[0]) is not self.fatal_error:
                raise
            return 0

    def _new_producer(self) -> Producer:
        return Producer(
            producer_config(error_cb=self._error_log, on_delivery=self._delivery_failed)
        )


@dataclass
class Settlement:
    """What a batch's answers mean: rows to mark, rows that failed, keys left unfinished."""

    published: list[OutboxRow] = field(default_factory=list)
    failed: list[tuple[OutboxRow, KafkaError]] = field(default_factory=list)
    unfinished_keys: set[str] = field(default_factory=set)


def settle(rows: list[OutboxRow], failures: dict[int, KafkaError], confirmed: bool) -> Settlement:
    """Sort a batch by Kafka's answers.

    After a key's first failure, its later rows stay pending even if Kafka took them: they
    are sent again behind the failed one, so the key's last word is in order. Unconfirmed
    rows (a shutdown's grace ran out) leave their key unfinished too.
    """
    outcome = Settlement()
    for row in rows:
        if row.key in outcome.unfinished_keys:
            continue
        if (error := failures.get(row.id)) is not None:
            outcome.unfinished_keys.add(row.key)
            outcome.failed.append((row, error))
        elif confirmed:
            outcome.published.append(row)
        else:
            outcome.unfinished_keys.add(row.key)
    return outcome


@dataclass
class Tally:
    """Rows this relay published and deliveries that failed: in all and since the last report."""

    published_total: int = 0
    published_since_report: int = 0
    errors_since_report: int = 0

    def published(self, rows: list[OutboxRow]) -> None:
        _observe_delivery_ages(rows)
        metrics.PUBLISHED.inc(len(rows))
        self.published_since_report += len(rows)
        self.published_total += len(rows)

    def failed(self, count: int) -> None:
        self.errors_since_report += count

    def reported(self) -> None:
        self.published_since_report = self.errors_since_report = 0


def _observe_delivery_ages(published: list[OutboxRow]) -> None:
    """Creation to acknowledgement, for the rows _TIMED_PER_BATCH picks."""
    acknowledged = time.time()
    step = max(1, -(-len(published) // _TIMED_PER_BATCH))  # rounded up: at most that many
    for row in published[::step]:
        metrics.DELIVERY_AGE.observe(acknowledged - row.created)
