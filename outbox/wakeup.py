"""Wake the relay within milliseconds of a commit, without costing the writers.

Writers call `notify_relays()` from `transaction.on_commit`, so the NOTIFY runs in its own
tiny transaction after the change has committed and released its row locks. A NOTIFY
inside the writing transaction would take PostgreSQL's global notify-queue lock at commit
and serialise every writer behind it (bench/bench_relay.py measures both). If the NOTIFY
is lost (the connection broke right after the commit), the relay's fallback poll finds
the row anyway: the notification is only a hint, the outbox table is the truth.
"""

from __future__ import annotations

import logging

import psycopg
from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

CHANNEL = "countstream_outbox"


# One round trip. A NOTIFY commits a transaction of its own, which would wait for a WAL
# flush like any commit; a hint need not survive a crash, so that commit does not wait.
_NOTIFY = "SELECT set_config('synchronous_commit', 'off', true), pg_notify(%s, '')"


def notify_relays() -> None:
    """Tell listening relays that new outbox rows are committed (a hint, never required)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_NOTIFY, [CHANNEL])
    except DatabaseError as exc:
        logger.warning("could not wake the relay, it will poll instead: %s", exc)


def listen(conn: psycopg.Connection) -> None:
    conn.execute(f"LISTEN {CHANNEL}")


def wait(conn: psycopg.Connection, timeout: float) -> bool:
    """Block until a notification arrives (True) or `timeout` seconds pass (False).

    Notifications that arrived while the connection ran other queries are buffered by
    psycopg and count too; all pending ones are drained, since one claim serves them all.
    """
    woken = bool(list(conn.notifies(timeout=timeout, stop_after=1)))
    if woken:
        list(conn.notifies(timeout=0))
    return woken
