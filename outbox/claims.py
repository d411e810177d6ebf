"""Claiming outbox rows: the next batch of the lanes a relay leases, and the one after it.

A row is claimed by its state, never by an offset: each claim reads the oldest `pending`
rows of every owned lane, so a row that becomes visible late (a smaller id committed after
a larger one) is still found at its place. Each lane gets an even slice of the batch, so
one busy lane cannot starve the rest; the batch is therefore at most `batch_size` rounded
up to a multiple of the lanes (at most lanes - 1 rows more).
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import NamedTuple

import psycopg
from psycopg.rows import RowMaker

from outbox.db import id_array
from outbox.models import OutboxMessage

TABLE = OutboxMessage._meta.db_table

# Oldest pending rows of each owned lane, skipping keys that wait on a parked row or on a
# retry backoff, and rows already on their way. Every lane is a range scan of the partial
# index (lane, id) WHERE pending.
_CLAIM = f"""
    SELECT row.id, row.topic, row.key, row.value, row.headers,
           extract(epoch FROM row.created_at)::float8
      FROM unnest(%(lanes)s::int[]) AS owned(lane)
     CROSS JOIN LATERAL (
            SELECT o.id, o.topic, o.key, o.value, o.headers, o.created_at
              FROM {TABLE} o
             WHERE o.state = 'pending' AND o.lane = owned.lane
               AND o.key <> ALL(%(backing_off_keys)s::text[])
               AND o.id <> ALL(%(skipped_ids)s::bigint[])
               AND NOT EXISTS (
                       SELECT 1 FROM {TABLE} p
                        WHERE p.state = 'parked' AND p.key = o.key AND p.id < o.id)
             ORDER BY o.id
             LIMIT %(per_lane)s
          ) AS row
"""
_PREPARED_CLAIM_MAX_SKIPPED = 64


class OutboxRow(NamedTuple):
    id: int
    topic: str
    key: str
    value: bytes
    headers: dict[str, str]
    created: float  # epoch seconds


def _outbox_row(_cursor: psycopg.Cursor) -> RowMaker[OutboxRow]:
    return OutboxRow._make


def _fetch_claim(conn: psycopg.Connection, params: dict, prepare: bool) -> list[OutboxRow]:
    """Run the claim; also in the prefetch thread, so it touches nothing but its arguments."""
    # Binary results: the values arrive as raw bytes, not hex text to decode. Rows are made
    # by psycopg's C loop, not by a comprehension: a third less Python per claimed row.
    cursor = conn.cursor(binary=True, row_factory=_outbox_row)
    return cursor.execute(_CLAIM, params, prepare=prepare).fetchall()


def _claim_params(
    lanes: Collection[int],
    batch_size: int,
    skipped_ids: list[int],
    backing_off_keys: Collection[str],
) -> tuple[dict, bool]:
    """The claim's parameters, and whether to use the prepared plan."""
    params = {
        "lanes": sorted(lanes),
        "backing_off_keys": list(backing_off_keys),
        "skipped_ids": id_array(skipped_ids),
        "per_lane": -(-batch_size // len(lanes)),
    }
    # A short list of skipped rows (a steady trickle of writes) uses the prepared plan:
    # planning would cost more than the claim itself. A long one (draining a backlog) is
    # planned afresh: with the ids known, PostgreSQL hashes the list instead of scanning it
    # for every row, as a prepared plan would.
    return params, len(skipped_ids) <= _PREPARED_CLAIM_MAX_SKIPPED


class Claims:
    """Claims batches on the relay's lease connection; at most one claim ahead of time.

    The prefetched claim runs in a thread of its own beside the current batch's
    acknowledgements. It is handed out only if the relay still owns the lanes it was
    claimed for, and less the keys the batch before it left unfinished.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-prefetch")
        self._prefetched: tuple[Future, frozenset[int]] | None = None  # claim, its lanes

    def claim(
        self,
        conn: psycopg.Connection,
        lanes: Collection[int],
        skipped_ids: list[int],
        backing_off_keys: Collection[str],
    ) -> list[OutboxRow]:
        """Per owned lane, its oldest pending rows not skipped; nothing without lanes."""
        if not lanes:
            return []
        params = _claim_params(lanes, self.batch_size, skipped_ids, backing_off_keys)
        return _fetch_claim(conn, *params)

    def prefetch(
        self,
        conn: psycopg.Connection,
        lanes: Collection[int],
        skipped_ids: list[int],
        backing_off_keys: Collection[str],
    ) -> None:
        """Start claiming the next batch in the background."""
        if lanes:
            params = _claim_params(lanes, self.batch_size, skipped_ids, backing_off_keys)
            self._prefetched = (
                self._prefetcher.submit(_fetch_claim, conn, *params),
                frozenset(lanes),
            )

    def take_prefetched(
        self, lanes: Collection[int], unfinished_keys: Collection[str]
    ) -> list[OutboxRow]:
        """The prefetched batch less the rows of `unfinished_keys` (they stay pending behind
        their unfinished row); nothing if none was prefetched or the lanes changed since.
        Raises the claim's database error, if any."""
        if self._prefetched is None:
            return []
        claim, claimed_lanes = self._prefetched
        self._prefetched = None
        rows = claim.result()
        if claimed_lanes != lanes:
            return []
        return [row for row in rows if row.key not in unfinished_keys]

    def drop_prefetched(self) -> None:
        """Forget a prefetched batch (its rows stay pending), once its query is done."""
        if self._prefetched is not None:
            claim, _ = self._prefetched
            self._prefetched = None
            wait([claim])

    def close(self) -> None:
        self._prefetcher.shutdown(wait=True)
