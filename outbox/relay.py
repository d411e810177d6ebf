"""The relay: outbox rows -> Kafka, at least once, in commit order per key (docs/relay.md).

One loop, one batch at a time: claim the oldest pending rows of the lanes this relay
leases (`outbox.claims`), produce them, wait until Kafka has answered for every one
(`outbox.deliveries`), then mark the delivered rows published in one UPDATE on a
background connection (`outbox.marker`); failed deliveries go to the failure policy
(`outbox.failures`). Nothing is written before Kafka has acknowledged it: a relay killed at
any moment leaves its rows pending, and whoever holds the lane next sends them again
(duplicates, never gaps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import orjson
import psycopg
from django.conf import settings
from psycopg.types.json import set_json_loads

from infra.kafka import KafkaErrorLog, backoff
from outbox import metrics, wakeup
from outbox.claims import TABLE, Claims, OutboxRow
from outbox.db import unflushed_connection
from outbox.deliveries import Deliveries, Tally, settle
from outbox.failures import FailurePolicy
from outbox.leases import LaneLeases
from outbox.marker import Marker
from outbox.selectors import BACKLOG_SQL, Backlog

logger = logging.getLogger(__name__)

# From this batch size on (draining a backlog), the next batch is claimed while the current
# one waits for Kafka's acknowledgements; a trickle of single rows gains nothing from it.
_PREFETCH_MIN_ROWS = 1_000


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
        self.claims = Claims(options.batch_size)
        self.deliveries = Deliveries(KafkaErrorLog(logger, "relay: Kafka"))
        self.failures = FailurePolicy(options.max_attempts)
        self.tally = Tally()
        self.stopping = False
        self.left_behind = 0  # rows a --once run could not publish
        self._reconnects = 0
        self._next_rebalance = 0.0
        self._next_report = time.monotonic() + options.report_interval
        # Keys the last batch left unfinished (a row failed or went unconfirmed): their
        # later rows, even prefetched ones, wait behind the unfinished row.
        self._unfinished_keys: set[str] = set()
        self._announced_idle = False  # told the writers we idle, and no NOTIFY came since

    @property
    def published_total(self) -> int:
        return self.tally.published_total

    # ------------------------------------------------------------------ lifecycle

    def stop(self, *_signal_args) -> None:
        """Stop claiming; the batch in flight is still awaited and marked."""
        if not self.stopping:
            logger.info("relay: stopping after the current batch")
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
                    self._next_rebalance = 0.0  # a new session takes its share at once
                    heartbeat = partial(self.leases.keep_alive, conn)
                    with Marker(mark_conn, conn.info.backend_pid, heartbeat) as self._marker:
                        self._serve(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._session_lost(exc)
                continue
            if self.options.once:
                break
        self._await_deliveries()
        self.leases.lost()
        self.claims.close()
        logger.info("relay: stopped after publishing %d rows", self.published_total)
        return 1 if self.left_behind else 0

    def _connect(self) -> psycopg.Connection:
        conn = unflushed_connection("countstream-relay", tcp_alive=True)
        logger.info("relay: connected to PostgreSQL (backend pid %s)", conn.info.backend_pid)
        return conn

    def _session_lost(self, exc: Exception) -> None:
        """PostgreSQL went away, and with it our leases: send nothing more, then retry.

        The lanes' next owner may be sending their rows already: what librdkafka has not
        sent yet is dropped (the rows stay pending), what is on the wire is awaited.
        """
        self.leases.lost()
        metrics.LANES_OWNED.set(0)
        self.claims.drop_prefetched()
        self.deliveries.abandon_unsent(self.options.shutdown_grace)
        self._reconnects += 1
        delay = backoff(self._reconnects, base=0.5)
        logger.error("relay: lost PostgreSQL (%s); reconnecting in %.1fs", exc, delay)
        self._sleep(delay)

    def _serve(self, conn: psycopg.Connection) -> None:
        while not self.stopping:
            self._housekeeping(conn)
            if self.failures.paused():
                self._sleep(min(0.1, self.failures.paused_until - time.monotonic()))
                continue
            rows = self._take_prefetched(conn) or self._claim(conn, in_flight=[])
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
        self.claims.drop_prefetched()
        self._marker.wait()
        if self.options.once:
            self.left_behind = self._pending_in_owned_lanes(conn)

    def _housekeeping(self, conn: psycopg.Connection) -> None:
        self.leases.keep_alive(conn)
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
            self.leases.keep_alive(conn)
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

    def _claim(self, conn: psycopg.Connection, in_flight: list[int]) -> list[OutboxRow]:
        """The next batch: per owned lane, its oldest pending rows not already on their way."""
        skipped = self._marker.in_progress + in_flight
        backing_off = self.failures.keys_backing_off()
        return self.claims.claim(conn, self.leases.owned, skipped, backing_off)

    def _take_prefetched(self, conn: psycopg.Connection) -> list[OutboxRow]:
        """The prefetched batch, less the rows of keys that must wait (see Claims), if the
        lease session that claimed it still lives (raises if not)."""
        waiting = self._unfinished_keys | self.failures.keys_backing_off()
        rows = self.claims.take_prefetched(self.leases.owned, waiting)
        if rows:
            conn.execute("SELECT 1")  # the fence: a relay without its leases sends nothing
        return rows

    def _publish(self, conn: psycopg.Connection, rows: list[OutboxRow]) -> None:
        if len(rows) >= _PREFETCH_MIN_ROWS and not self.stopping:
            # Claimed beside this batch's acknowledgements, produced only after it is
            # settled: the order on the wire is the one without prefetch.
            in_flight = self._marker.in_progress + [row.id for row in rows]
            backing_off = self.failures.keys_backing_off()
            self.claims.prefetch(conn, self.leases.owned, in_flight, backing_off)
        failures = self.deliveries.send(rows)
        confirmed = self._await_deliveries(between=partial(self.leases.keep_alive, conn))
        failures.update(self.deliveries.failures(rows))
        outcome = settle(rows, failures, confirmed)
        if outcome.published:
            self.tally.published(outcome.published)
            self._marker.mark([row.id for row in outcome.published])
        if outcome.failed:
            self._record_failures(conn, outcome.failed)
        elif outcome.published:
            self.failures.delivered()
        self._unfinished_keys = outcome.unfinished_keys

    def _await_deliveries(self, between: Callable[[], object] = lambda: None) -> bool:
        """Wait until Kafka has answered for every message (see Deliveries.wait)."""
        return self.deliveries.wait(lambda: self.stopping, self.options.shutdown_grace, between)

    def _record_failures(self, conn: psycopg.Connection, failed: list) -> None:
        self.tally.failed(len(failed))
        fatal = self.failures.record(conn, failed)
        if self.options.once:
            logger.error("relay --once: giving up after failed deliveries")
            self.stopping = True
        if fatal:
            logger.error("relay: the Kafka producer failed fatally; starting a new one")
            self.deliveries.renew()

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
            self.tally.published_since_report,
            self.tally.published_since_report / max(elapsed, 1e-3),
            self.tally.errors_since_report,
            backlog.pending,
            backlog.oldest_age_s,
            backlog.parked,
        )
        self.tally.reported()
        self._next_report = time.monotonic() + self.options.report_interval

    def _pending_in_owned_lanes(self, conn: psycopg.Connection) -> int:
        query = f"SELECT count(*) FROM {TABLE} WHERE state = 'pending' AND lane = ANY(%s)"
        return conn.execute(query, [sorted(self.leases.owned)]).fetchone()[0]
