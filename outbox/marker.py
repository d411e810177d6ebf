"""Marking delivered rows published, in the background, on a connection of its own.

The UPDATE that marks a batch is the relay's most expensive query (every marked row gets a
new heap tuple and index entries). Running it beside the relay's main loop lets
PostgreSQL write batch N while the relay claims and produces batch N+1. Until batch N is
marked its rows are still pending, so the next claim skips them by id (`in_progress`).
Only one mark runs at a time; a lost mark only means those rows are sent again.

A mark is fenced by the relay's lease session: it marks nothing once that session is gone
(its membership lock with it), since the lanes' next owner may be sending the rows again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg

from outbox.db import id_array
from outbox.leases import LEASE_HEARTBEAT_S, MEMBER_LOCKS
from outbox.models import OutboxMessage

_MARK_PUBLISHED = f"""
    UPDATE {OutboxMessage._meta.db_table} SET state = 'published', published_at = now()
     WHERE id = ANY(%(ids)s::bigint[]) AND state = 'pending'
       AND EXISTS (SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND classid = %(members)s
                      AND objid = %(lease_pid)s AND objsubid = 2 AND granted)
"""


class Marker:
    """Marks on `conn`; `heartbeat` keeps the lease session alive while a wait lasts."""

    def __init__(
        self, conn: psycopg.Connection, lease_pid: int, heartbeat: Callable[[], object]
    ) -> None:
        self._conn = conn
        self._fence = {"members": MEMBER_LOCKS, "lease_pid": lease_pid}
        self._heartbeat = heartbeat
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-marker")
        self._future: Future | None = None
        self.in_progress: list[int] = []

    def mark(self, ids: list[int]) -> None:
        """Start marking `ids` published, once the previous mark has committed."""
        self.wait()
        self.in_progress = ids
        # In id order the UPDATE walks the heap pages in order instead of lane by lane.
        params = {"ids": id_array(sorted(ids)), **self._fence}
        self._future = self._executor.submit(self._conn.execute, _MARK_PUBLISHED, params)

    def wait(self) -> None:
        """Block until the last mark has committed; raise its database error, if any."""
        future, self._future = self._future, None
        while future is not None:
            try:
                future.result(timeout=LEASE_HEARTBEAT_S)
                future = None
            except TimeoutError:
                self._heartbeat()
        self.in_progress = []

    def __enter__(self) -> Marker:
        return self

    def __exit__(self, *exc_info) -> None:
        self._executor.shutdown(wait=True)
