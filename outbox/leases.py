"""Lane leases: which relay may publish which outbox lanes right now.

Every outbox row carries a lane (a hash of its key). A relay publishes a lane only while
it holds that lane's PostgreSQL advisory lock, taken at session level on the relay's own
connection. One lane has at most one publisher, so the events of one key leave in id
order; and a relay that dies loses its connection and with it every lease, so the others
take its lanes over at their next rebalance.

Fair shares: each relay also holds a membership lock keyed by its backend pid. Counting
those locks tells every relay how many relays are alive, and its rank among them (by pid)
fixes its share: `lanes // relays`, one more for the first `lanes % relays` ranks. A relay
above its share releases lanes (only between batches, when none of its rows is in
flight); one below it takes free lanes. Every relay computes shares from its own view, so
for a moment a lane may be nobody's; never is it two relays'.

A lease lasts as long as its session, so a session that hangs must end quickly: PostgreSQL
ends the lease session after LEASE_TIMEOUT_S without a query (`idle_session_timeout`),
and the relay queries it at least every LEASE_HEARTBEAT_S while it lives. With the TCP
keepalives of the relay's sessions (outbox/db.py), a relay whose machine or network is
gone loses its lanes within seconds, and the other relays take them at their next
rebalance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

# The two-int advisory lock namespaces ("outl", "outm"), kept clear of single-bigint locks.
LANE_LOCKS = 0x6F75_746C
MEMBER_LOCKS = 0x6F75_746D

LEASE_TIMEOUT_S = 5
LEASE_HEARTBEAT_S = 1.0

# Monotonic time this process's lease session last answered; None while it has none. Read
# by the liveness probe (outbox/metrics.py).
_lease_answered_at: float | None = None


def lease_session_silence() -> float | None:
    """Seconds since the lease session last answered; None if the relay has none."""
    return None if _lease_answered_at is None else time.monotonic() - _lease_answered_at


_HELD_LOCKS = """
    SELECT objid::int
      FROM pg_locks
     WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
     ORDER BY objid
"""


@dataclass
class LaneLeases:
    """The leases of one relay session. `greedy` takes every free lane (for `--once`)."""

    lanes: int
    greedy: bool = False
    owned: set[int] = field(default_factory=set)
    relays: int = 1
    answered_at: float = 0.0  # monotonic time this lease session last answered

    def join(self, conn: psycopg.Connection) -> None:
        """Announce this relay; its membership lock lives and dies with the connection."""
        conn.execute(f"SET idle_session_timeout = '{LEASE_TIMEOUT_S}s'")
        conn.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", [MEMBER_LOCKS])
        self.owned.clear()
        self._answered()

    def keep_alive(self, conn: psycopg.Connection) -> None:
        """Query the lease session if it has been silent for LEASE_HEARTBEAT_S; raises if
        it is gone."""
        if time.monotonic() - self.answered_at >= LEASE_HEARTBEAT_S:
            conn.execute("SELECT 1")
            self._answered()

    def lost(self) -> None:
        """The lease session is gone, and every lease with it."""
        global _lease_answered_at
        _lease_answered_at = None
        self.owned.clear()

    def _answered(self) -> None:
        global _lease_answered_at
        self.answered_at = _lease_answered_at = time.monotonic()

    def share(self, conn: psycopg.Connection) -> int:
        """How many lanes this relay should hold, given the relays alive right now."""
        if self.greedy:
            return self.lanes
        pid = conn.info.backend_pid
        members = sorted({*_held(conn, MEMBER_LOCKS), pid})
        self.relays = len(members)
        rank = members.index(pid)
        return self.lanes // self.relays + (1 if rank < self.lanes % self.relays else 0)

    def rebalance(
        self, conn: psycopg.Connection, before_release: Callable[[], object] = lambda: None
    ) -> tuple[set[int], set[int]]:
        """Move toward this relay's fair share; return the lanes (gained, released).

        `before_release` runs before any lane is given up (the relay finishes marking).
        """
        target = self.share(conn)
        if len(self.owned) > target:
            before_release()
            released = set(sorted(self.owned)[target:])
            conn.execute(
                "SELECT pg_advisory_unlock(%s, lane) FROM unnest(%s::int[]) AS lane",
                [LANE_LOCKS, sorted(released)],
            )
            self.owned -= released
            return set(), released
        if len(self.owned) < target:
            gained = self._take_free(conn, target - len(self.owned))
            self.owned |= gained
            return gained, set()
        return set(), set()

    def _take_free(self, conn: psycopg.Connection, wanted: int) -> set[int]:
        taken = set(_held(conn, LANE_LOCKS))
        # Start the search at a pid-dependent lane so joining relays rarely race for one.
        start = conn.info.backend_pid % self.lanes
        order = [(start + offset) % self.lanes for offset in range(self.lanes)]
        candidates = [lane for lane in order if lane not in taken][:wanted]
        rows = conn.execute(
            "SELECT lane FROM unnest(%s::int[]) AS lane WHERE pg_try_advisory_lock(%s, lane)",
            [candidates, LANE_LOCKS],
        ).fetchall()
        return {lane for (lane,) in rows}


def _held(conn: psycopg.Connection, namespace: int) -> list[int]:
    return [objid for (objid,) in conn.execute(_HELD_LOCKS, [namespace]).fetchall()]
