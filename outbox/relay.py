"""The relay: outbox rows -> Kafka, at least once, in commit order per key (docs/relay.md).

One loop, one batch at a time: claim the oldest pending rows of the lanes this relay
leases, produce them, wait until Kafka has answered for every one (librdkafka reports
only failures), then mark the delivered rows published in one UPDATE. A row is claimed by
its state, never by an offset, so a row that becomes visible late (a smaller id committed
after a larger one) is still found. Nothing is written before Kafka has acknowledged it: a
relay killed at any moment leaves its rows pending, and whoever holds the lane next sends
them again (duplicates, never gaps).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from django.conf import settings
from psycopg.rows import RowMaker
from psycopg.types.json import set_json_loads

from infra.kafka import QUIET_LOG, KafkaErrorLog, backoff, client_config
from outbox import metrics, wakeup
from outbox.db import id_array, unflushed_connection
from outbox.leases import LaneLeases
from outbox.marker import Marker
from outbox.models import OutboxMessage
from outbox.selectors import BACKLOG_SQL, Backlog

logger = logging.getLogger(__name__)

TABLE = OutboxMessage._meta.db_table

# Oldest pending rows of each owned lane, skipping keys that wait on a parked row or on a
# retry backoff. Each lane gets its slice of the batch, so one busy lane cannot starve
# the rest; every lane is a range scan of the partial index (lane, id) WHERE pending.
_CLAIM = f"""
    SELECT row.id, row.topic, row.key, row.value, row.headers,
           extract(epoch FROM row.created_at)::float8
      FROM unnest(%(lanes)s::int[]) AS owned(lane)
     CROSS JOIN LATERAL (
            SELECT o.id, o.topic, o.key, o.value, o.headers, o.created_at
              FROM {TABLE} o
             WHERE o.state = 'pending' AND o.lane = owned.lane
               AND o.key <> ALL(%(held_keys)s::text[])
               AND o.id <> ALL(%(skipped_ids)s::bigint[])
               AND NOT EXISTS (
                       SELECT 1 FROM {TABLE} p
                        WHERE p.state = 'parked' AND p.key = o.key AND p.id < o.id)
             ORDER BY o.id
             LIMIT %(per_lane)s
          ) AS row
"""
_PREPARED_CLAIM_MAX_SKIPPED = 64
# From this batch size on (draining a backlog), the next batch is claimed while the current
# one waits for Kafka's acknowledgements; a trickle of single rows gains nothing from it.
_PREFETCH_MIN_ROWS = 1_000
# The delivery-age histogram times every row of a batch up to this size and an even sample
# of this many rows of a larger one: one observation costs about as much as a produce().
# A row's age is taken when its batch is acknowledged (the relay gets no report per success).
_TIMED_PER_BATCH = 256
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
    return client_config(
        **{**_PRODUCER_DEFAULTS, **settings.KAFKA_PRODUCER_CONFIG, **_PRODUCER_REQUIRED},
        **callbacks,
    )


def is_transient(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _TRANSIENT


class OutboxRow(NamedTuple):
    id: int
    topic: str
    key: str
    value: bytes
    headers: dict[str, str]
    created: float  # epoch seconds


def _fetch_claim(conn: psycopg.Connection, params: dict, prepare: bool) -> list[OutboxRow]:
    """Run the claim; also in the prefetch thread, so it touches nothing but its arguments."""
    # Binary results: the values arrive as raw bytes, not hex text to decode. Rows are made
    # by psycopg's C loop, not by a comprehension: a third less Python per claimed row.
    cursor = conn.cursor(binary=True, row_factory=_outbox_row)
    return cursor.execute(_CLAIM, params, prepare=prepare).fetchall()


def _outbox_row(_cursor: psycopg.Cursor) -> RowMaker[OutboxRow]:
    return OutboxRow._make


@dataclass(frozen=True)
class RelayOptions:
    batch_size: int = 20_000
    once: bool = False
    poll_interval: float = 1.0
    rebalance_interval: float = 0.5
    report_interval: float = 10.0
    shutdown_grace: float = 30.0
    max_attempts: int = field(default_factory=lambda: settings.OUTBOX_MAX_ATTEMPTS)


class Relay:
    """Publishes the outbox. `run()` blocks until `stop()` (or, with `once`, until drained)."""

    def __init__(self, options: RelayOptions) -> None:
        self.options = options
        self.leases = LaneLeases(settings.OUTBOX_LANES, greedy=options.once)
        self._kafka_errors = KafkaErrorLog(logger, "relay: Kafka")
        self.producer = self._new_producer()
        self.stopping = False
        self._stop_deadline = 0.0  # until when a stop waits for delivery reports
        self.left_behind = 0  # rows a --once run could not publish
        self._transient_failures = 0
        self._reconnects = 0
        self._paused_until = 0.0
        self._held_keys: dict[str, float] = {}  # key -> monotonic time its backoff ends
        self._next_rebalance = 0.0
        self._next_report = time.monotonic() + options.report_interval
        self._published_since_report = 0
        self._errors_since_report = 0
        self.published_total = 0
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-prefetch")
        self._prefetched: tuple[Future, frozenset[int]] | None = None  # claim, its lanes
        self._blocked_keys: set[str] = set()  # keys the last batch could not finish
        self._announced_idle = False  # told the writers we idle, and no NOTIFY came since
        self._failed_deliveries: list[tuple[tuple[str, bytes, bytes], KafkaError]] = []

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_signal_args) -> None:
        """Stop claiming; the batch in flight is still awaited and marked."""
        if not self.stopping:
            logger.info("relay: stopping after the current batch")
            self._stop_deadline = time.monotonic() + self.options.shutdown_grace
        self.stopping = True

    def run(self) -> int:
        """Publish until stopped; the exit status is 0 unless a --once run left rows behind."""
        while not self.stopping:
            try:
                with self._connect() as conn, self._connect() as mark_conn:
                    wakeup.listen(conn)
                    set_json_loads(orjson.loads, conn)  # the claimed rows' headers
                    self._announced_idle = False  # a new session has announced nothing
                    self.leases.join(conn)
                    self._reconnects = 0
                    with Marker(mark_conn) as self._marker:
                        self._serve(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._session_lost(exc)
                continue
            if self.options.once:
                break
        if not self._await_deliveries():
            logger.warning(
                "relay: %d deliveries unconfirmed at shutdown; their rows stay pending and "
                "will be sent again",
                len(self.producer),
            )
        self._prefetcher.shutdown(wait=True)
        logger.info("relay: stopped after publishing %d rows", self.published_total)
        return 1 if self.left_behind else 0

    def _connect(self) -> psycopg.Connection:
        conn = unflushed_connection("countstream-relay")
        logger.info("relay: connected to PostgreSQL (backend pid %s)", conn.info.backend_pid)
        return conn

    def _session_lost(self, exc: Exception) -> None:
        """PostgreSQL went away, and with it our leases: finish what Kafka has, then retry.

        Letting the in-flight messages land first keeps them ahead of whatever the lanes'
        next owner re-sends.
        """
        self.leases.owned.clear()
        metrics.LANES_OWNED.set(0)
        self._drop_prefetched()
        self._await_deliveries()
        self._reconnects += 1
        delay = backoff(self._reconnects, base=0.5)
        logger.error("relay: lost PostgreSQL (%s); reconnecting in %.1fs", exc, delay)
        self._sleep(delay)

    def _serve(self, conn: psycopg.Connection) -> None:
        while not self.stopping:
            self._housekeeping(conn)
            if time.monotonic() < self._paused_until:
                self._sleep(min(0.1, self._paused_until - time.monotonic()))
                continue
            rows = self._take_prefetched() or self._claim(conn)
            if rows:
                self._publish(conn, rows)
            elif self.options.once:
                break
            elif not self._announced_idle:
                # Writers wake only a relay that said it idles; the claim that follows
                # sees every commit made before they could have heard it (wakeup.py).
                wakeup.announce_idle(conn)
                self._announced_idle = True
            else:
                self._idle(conn)
        self._drop_prefetched()
        self._marker.wait()
        if self.options.once:
            self.left_behind = self._pending_in_owned_lanes(conn)

    def _housekeeping(self, conn: psycopg.Connection) -> None:
        now = time.monotonic()
        if now >= self._next_rebalance:
            self._rebalance(conn)
        if now >= self._next_report:
            self._report(conn)

    def _idle(self, conn: psycopg.Connection) -> None:
        """Wait for a commit's NOTIFY, the fallback poll, a stop or new lanes to serve."""
        self._marker.wait()
        deadline = time.monotonic() + self.options.poll_interval
        while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
            if wakeup.wait(conn, min(0.25, remaining)):
                self._announced_idle = False  # the writers that woke us used it up
                return
            if time.monotonic() >= self._next_rebalance and self._rebalance(conn):
                return
            if time.monotonic() >= self._next_report:
                self._report(conn)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ leases

    def _rebalance(self, conn: psycopg.Connection) -> bool:
        """Take or give back lanes toward our fair share; True if we gained any."""
        # A lane goes to its next owner with its rows marked.
        gained, released = self.leases.rebalance(conn, before_release=self._marker.wait)
        self._next_rebalance = time.monotonic() + self.options.rebalance_interval
        if gained or released:
            logger.info(
                "relay: lanes %d/%d (%d relays; +%d -%d)",
                len(self.leases.owned),
                self.leases.lanes,
                self.leases.relays,
                len(gained),
                len(released),
            )
        metrics.LANES_OWNED.set(len(self.leases.owned))
        metrics.RELAYS.set(self.leases.relays)
        return bool(gained)

    # ------------------------------------------------------------------ claim and publish

    def _claim(self, conn: psycopg.Connection) -> list[OutboxRow]:
        """The next batch: per owned lane, its oldest pending rows not already on their way."""
        claim = self._claim_params(in_flight=[])
        return _fetch_claim(conn, *claim) if claim else []

    def _claim_params(self, in_flight: list[int]) -> tuple[dict, bool] | None:
        """The claim's parameters and whether to prepare it, from this relay's state (read in
        the loop's thread only); None without lanes."""
        lanes = sorted(self.leases.owned)
        if not lanes:
            return None
        now = time.monotonic()
        self._held_keys = {key: end for key, end in self._held_keys.items() if end > now}
        skipped = self._marker.in_progress + in_flight
        params = {
            "lanes": lanes,
            "held_keys": list(self._held_keys),
            "skipped_ids": id_array(skipped),
            "per_lane": -(-self.options.batch_size // len(lanes)),
        }
        # A short list of skipped rows (a steady trickle of writes) uses the prepared plan:
        # planning would cost more than the claim itself. A long one (draining a backlog)
        # is planned afresh: with the ids known, PostgreSQL hashes the list instead of
        # scanning it for every row, as a prepared plan would.
        return params, len(skipped) <= _PREPARED_CLAIM_MAX_SKIPPED

    def _publish(self, conn: psycopg.Connection, rows: list[OutboxRow]) -> None:
        if len(rows) >= _PREFETCH_MIN_ROWS and not self.stopping:
            self._prefetch(conn, in_flight=[row.id for row in rows])
        self._failed_deliveries.clear()
        failures: dict[int, KafkaError] = {}
        halted: set[str] = set()  # keys whose row failed to produce: keep the rest back
        for row in rows:
            if row.key not in halted and (error := self._produce(row)) is not None:
                failures[row.id] = error
                halted.add(row.key)
        confirmed = self._await_deliveries()
        failures.update(self._delivery_failures(rows))
        self._blocked_keys = self._settle(conn, rows, failures, confirmed)

    # ------------------------------------------------------------------ prefetch

    def _prefetch(self, conn: psycopg.Connection, in_flight: list[int]) -> None:
        """Claim the next batch in the background, beside this batch's acknowledgements.

        It is produced only after this batch is acknowledged and settled, so the order on the
        wire is the same as without it. What changed meanwhile is applied when it is taken.
        """
        claim = self._claim_params(in_flight)
        if claim:
            fetched = self._prefetcher.submit(_fetch_claim, conn, *claim)
            self._prefetched = (fetched, frozenset(self.leases.owned))

    def _take_prefetched(self) -> list[OutboxRow]:
        """The prefetched batch, less the keys the batch before it left unfinished (their
        rows stay pending behind the unfinished one); nothing if the lanes changed since."""
        if self._prefetched is None:
            return []
        claim, lanes = self._prefetched
        self._prefetched = None
        rows = claim.result()
        if lanes != self.leases.owned or time.monotonic() < self._paused_until:
            return []
        waiting = self._blocked_keys | self._held_keys.keys()
        return [row for row in rows if row.key not in waiting]

    def _drop_prefetched(self) -> None:
        """Forget a prefetched batch (its rows stay pending), once its query is done."""
        if self._prefetched is not None:
            claim, _ = self._prefetched
            self._prefetched = None
            wait([claim])

    def _produce(self, row: OutboxRow) -> KafkaError | None:
        """Hand a row to librdkafka; the error if it refuses it (e.g. larger than allowed)."""
        while True:
            try:
                self.producer.produce(row.topic, row.value, row.key, headers=row.headers)
                return None
            except BufferError:  # librdkafka's queue is full: let it drain a little
                self.producer.poll(0.05)
            except KafkaException as exc:
                return exc.args[0]

    def _delivery_failed(self, error: KafkaError, message: Message) -> None:
        """librdkafka's report of a message it could not deliver (the only reports we get)."""
        self._failed_deliveries.append(((message.topic(), message.key(), message.value()), error))

    def _delivery_failures(self, rows: list[OutboxRow]) -> dict[int, KafkaError]:
        """The rows of this batch that Kafka did not take, by id (their event ids make
        topic, key and value unique)."""
        if not self._failed_deliveries:
            return {}
        by_message = {(row.topic, row.key.encode(), row.value): row.id for row in rows}
        return {
            by_message[message]: error
            for message, error in self._failed_deliveries
            if message in by_message
        }

    def _await_deliveries(self) -> bool:
        """Wait until Kafka has answered for every message: True, or False if the shutdown
        grace, counted from the stop, ran out first (what is still out is unconfirmed)."""
        while self.producer.flush(0.1):
            if self.stopping and time.monotonic() > self._stop_deadline:
                return False
        return True

    def _settle(
        self,
        conn: psycopg.Connection,
        rows: list[OutboxRow],
        failures: dict[int, KafkaError],
        confirmed: bool,
    ) -> set[str]:
        """Mark what Kafka acknowledged; record failures; return the keys left unfinished.

        After a key's first failure, its later rows stay pending even if Kafka took them:
        they are sent again behind the failed one, so the key's last word is in order.
        """
        published: list[OutboxRow] = []
        failed: list[tuple[OutboxRow, KafkaError]] = []
        blocked: set[str] = set()
        for row in rows:
            if row.key in blocked:
                continue
            if (error := failures.get(row.id)) is not None:
                blocked.add(row.key)
                failed.append((row, error))
            elif confirmed:
                published.append(row)
            else:  # unconfirmed at shutdown
                blocked.add(row.key)
        if published:
            self._observe_delivery_ages(published)
            self._marker.mark([row.id for row in published])
            metrics.PUBLISHED.inc(len(published))
            self._published_since_report += len(published)
            self.published_total += len(published)
        if failed:
            self._record_failures(conn, failed)
        elif published:
            self._transient_failures = 0
        return blocked

    @staticmethod
    def _observe_delivery_ages(published: list[OutboxRow]) -> None:
        """Creation to acknowledgement, for the rows _TIMED_PER_BATCH picks."""
        acknowledged = time.time()
        for row in published[:: max(1, len(published) // _TIMED_PER_BATCH)]:
            metrics.DELIVERY_AGE.observe(acknowledged - row.created)

    def _record_failures(
        self, conn: psycopg.Connection, failed: list[tuple[OutboxRow, KafkaError]]
    ) -> None:
        self._errors_since_report += len(failed)
        groups: dict[tuple[str, bool], list[int]] = {}
        for row, error in failed:
            groups.setdefault((error.str(), is_transient(error)), []).append(row.id)
        for (error, transient), ids in groups.items():
            metrics.PUBLISH_ERRORS.labels("transient" if transient else "permanent").inc(len(ids))
            params = {
                "error": error,
                "may_park": not transient,
                "max_attempts": self.options.max_attempts,
                "ids": ids,
            }
            outcome = conn.execute(_RECORD_FAILURE, params).fetchall()
            if transient:
                self._pause_for_cluster(error, len(ids))
            else:
                self._hold_keys(error, outcome)
        if self.options.once:
            logger.error("relay --once: giving up after failed deliveries")
            self.stop()
        if any(error.fatal() for _, error in failed):
            logger.error("relay: the Kafka producer failed fatally; starting a new one")
            self.producer = self._new_producer()

    def _pause_for_cluster(self, error: str, rows: int) -> None:
        self._transient_failures += 1
        delay = backoff(self._transient_failures)
        self._paused_until = time.monotonic() + delay
        logger.warning(
            "relay: Kafka did not take %d rows (%s); they stay pending, retrying in %.1fs",
            rows,
            error,
            delay,
        )

    def _hold_keys(self, error: str, outcome: list[tuple[int, str, str, int]]) -> None:
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
                self._held_keys[key] = time.monotonic() + delay
                logger.warning(
                    "relay: row #%d (key %s) failed, attempt %d/%d, retrying in %.1fs: %s",
                    row_id,
                    key,
                    attempts,
                    self.options.max_attempts,
                    delay,
                    error,
                )

    # ------------------------------------------------------------------ reports

    def _report(self, conn: psycopg.Connection) -> None:
        row = conn.execute(BACKLOG_SQL, {"lanes": self.leases.lanes}).fetchone()
        backlog = Backlog.from_row(row)
        metrics.BACKLOG.set(backlog.pending)
        metrics.OLDEST_AGE.set(backlog.oldest_age_s)
        metrics.PARKED_ROWS.set(backlog.parked)
        elapsed = self.options.report_interval + time.monotonic() - self._next_report
        logger.info(
            "relay: lanes %d/%d (%d relays), published %d (%.0f/s), errors %d, "
            "backlog %d, oldest %.1fs, parked %d",
            len(self.leases.owned),
            self.leases.lanes,
            self.leases.relays,
            self._published_since_report,
            self._published_since_report / max(elapsed, 1e-3),
            self._errors_since_report,
            backlog.pending,
            backlog.oldest_age_s,
            backlog.parked,
        )
        self._published_since_report = self._errors_since_report = 0
        self._next_report = time.monotonic() + self.options.report_interval

    def _pending_in_owned_lanes(self, conn: psycopg.Connection) -> int:
        query = f"SELECT count(*) FROM {TABLE} WHERE state = 'pending' AND lane = ANY(%s)"
        return conn.execute(query, [sorted(self.leases.owned)]).fetchone()[0]

    # ------------------------------------------------------------------ Kafka

    def _new_producer(self) -> Producer:
        return Producer(
            producer_config(error_cb=self._kafka_errors, on_delivery=self._delivery_failed)
        )
