"""Wake the relay within milliseconds of a commit, without costing the writers.

Writers call `notify_relays()` from `transaction.on_commit`, so the NOTIFY runs after the
change has committed and released its row locks. A NOTIFY inside the writing transaction
would take PostgreSQL's global notify-queue lock at commit and serialise every writer
behind it (bench/bench_relay.py measures both).

The NOTIFY itself is sent by a background thread of the writing process, on its own
connection, so the writer does not wait for that round trip. Requests coalesce: while one
NOTIFY is on its way, any number of further commits ask for exactly one more, sent after
it. Every commit is therefore followed by a NOTIFY sent after it (the relay cannot sleep
through it), and a busy process sends far fewer NOTIFYs than it commits.

If a NOTIFY is lost (the connection broke right after the commit), the relay's fallback poll
finds the row anyway: the notification is only a hint, the outbox table is the truth.
"""

from __future__ import annotations

import logging
import os
import threading

import psycopg
from django.db import transaction

from outbox.db import unflushed_connection

logger = logging.getLogger(__name__)

CHANNEL = "countstream_outbox"


class _Notifier:
    """A daemon thread that sends NOTIFYs on request, at most one in flight.

    It talks to PostgreSQL on a plain psycopg connection of its own, not through Django's
    per-thread connection handling: a NOTIFY is then one prepared statement, the cheapest
    round trip there is, which matters because busy writers ask for one per commit.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._wanted = threading.Event()
        self._stopping = False
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="outbox-wakeup", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while True:
                self._wanted.wait()
                if self._stopping:
                    return
                self._wanted.clear()  # a request from now on asks for one more NOTIFY
                self._send()
        finally:
            self._disconnect()

    def _send(self) -> None:
        try:
            if self._conn is None:
                self._conn = unflushed_connection("countstream-wakeup")
            self._conn.execute("SELECT pg_notify(%s, '')", [CHANNEL], prepare=True)
        except psycopg.Error as exc:
            logger.warning("could not wake the relay, it will poll instead: %s", exc)
            self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_notifier: _Notifier | None = None
_notifier_lock = threading.Lock()


def notify_relays() -> None:
    """Tell listening relays that new outbox rows are committed (a hint, never required)."""
    global _notifier
    notifier = _notifier
    if notifier is None or notifier.pid != os.getpid():  # none yet, or we were forked
        with _notifier_lock:
            if _notifier is None or _notifier.pid != os.getpid():
                _notifier = _Notifier()
            notifier = _notifier
    notifier.request()


def notify_relays_after_commit() -> None:
    """Wake the relays once the current transaction commits (never inside it, see above)."""
    transaction.on_commit(notify_relays, robust=True)


def stop_notifier() -> None:
    """Stop the background thread and close its connection (tests, before dropping the db)."""
    global _notifier
    with _notifier_lock:
        if _notifier is not None and _notifier.pid == os.getpid():
            _notifier.stop()
        _notifier = None


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
