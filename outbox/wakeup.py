"""Wake an idle relay within milliseconds of a commit, without costing the writers.

Writers call `notify_relays()` from `transaction.on_commit`, so the NOTIFY runs after the
change has committed and released its row locks. A NOTIFY inside the writing transaction
would take PostgreSQL's global notify-queue lock at commit and serialise every writer
behind it (bench/bench_relay.py measures both).

Only an idle relay needs waking: a busy one claims again as soon as its batch is done. So a
relay announces on IDLE_CHANNEL that it is about to go idle, claims once more, and only then
waits. Each writing process keeps a background thread that listens for those announcements
and sends a NOTIFY on CHANNEL after a commit only if a relay announced since its last
NOTIFY. While the relays are busy, a commit costs its writer nothing but setting a flag.

Why no commit is slept through: a relay waits only after an announcement and a claim that
found nothing, so a commit it did not see came after its announcement. The writer's thread
hears the announcement either before that commit (the commit then sends a NOTIFY) or after
it (the thread then finds the commit unannounced and sends the NOTIFY itself). A relay woken
by any NOTIFY announces again before its next wait, since the writers that sent it have
used up its previous announcement.

The NOTIFY is a hint, never required: if one is lost (a connection broke), the relay's
fallback poll finds the rows anyway; the outbox table is the truth.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from contextlib import suppress

import psycopg
from django.db import transaction

from outbox.db import unflushed_connection

logger = logging.getLogger(__name__)

CHANNEL = "countstream_outbox"  # writers -> relays: rows committed
IDLE_CHANNEL = "countstream_relay_idle"  # relays -> writers: about to wait for a NOTIFY
_NOTIFY = "SELECT pg_notify(%s, '')"


class _Notifier:
    """A daemon thread that hears relays' announcements and sends NOTIFYs for them.

    It talks to PostgreSQL on a plain psycopg connection of its own, not through Django's
    per-thread connection handling: a NOTIFY is then one prepared statement, the cheapest
    round trip there is.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        # Flags shared with the writers' threads. Each side writes its own flag before it
        # reads the other's, so of a commit and an announcement that cross, at least one
        # side sees both and the NOTIFY is sent.
        self._unannounced_commit = False  # set by writers, cleared when a NOTIFY is sent
        self._relay_idle = True  # until we listen, assume a relay may be waiting
        self._stopping = False
        self._conn: psycopg.Connection | None = None
        self._poke_read, self._poke_write = os.pipe()
        for fd in (self._poke_read, self._poke_write):
            os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._run, name="outbox-wakeup", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """A commit happened: wake the thread only if a relay may be idle."""
        self._unannounced_commit = True
        if self._relay_idle:
            self._poke()

    def stop(self) -> None:
        self._stopping = True
        self._poke()
        self._thread.join(timeout=5)
        os.close(self._poke_read)
        os.close(self._poke_write)

    def _poke(self) -> None:
        with suppress(BlockingIOError):  # the pipe is full, so the thread is awake anyway
            os.write(self._poke_write, b"!")

    def _run(self) -> None:
        try:
            while not self._stopping:
                # Check the flags again after a NOTIFY as after a wait: it may have brought
                # an announcement while a writer's commit only set its flag.
                if self._relay_idle and self._unannounced_commit:
                    self._send()
                else:
                    self._wait()
        finally:
            self._disconnect()

    def _send(self) -> None:
        """NOTIFY, connecting (and listening) first if need be: until it listens, the thread
        assumes a relay idles, so the first commit always gets here."""
        self._relay_idle = self._unannounced_commit = False  # before: see the flags above
        try:
            if self._conn is None:
                self._conn = unflushed_connection("countstream-wakeup")
                self._conn.execute(f"LISTEN {IDLE_CHANNEL}")
            self._conn.execute(_NOTIFY, [CHANNEL], prepare=True)
        except psycopg.Error as exc:
            logger.warning("could not wake the relay, it will poll instead: %s", exc)
            self._disconnect()
            return
        # An announcement that arrived with the NOTIFY's reply is kept aside by psycopg: no
        # select() would ever see it, and every later commit would wait for the relay's poll.
        self._hear_announcements()

    def _wait(self) -> None:
        """Sleep until a writer pokes us or a relay announces itself."""
        sockets = [self._poke_read] + ([self._conn.fileno()] if self._conn else [])
        select.select(sockets, [], [])
        with suppress(BlockingIOError):  # empty now
            while os.read(self._poke_read, 4096):
                pass
        if self._conn is not None:
            self._hear_announcements()

    def _hear_announcements(self) -> None:
        """Note whether a relay announced, from the socket or from what psycopg kept aside."""
        try:
            if list(self._conn.notifies(timeout=0)):
                self._relay_idle = True
        except psycopg.Error:
            self._disconnect()

    def _disconnect(self) -> None:
        """Drop the connection; unheard, a relay may be idle, so assume one is."""
        self._relay_idle = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_notifier: _Notifier | None = None
_notifier_lock = threading.Lock()


def notify_relays() -> None:
    """Tell idle relays that new outbox rows are committed (a hint, never required)."""
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


def announce_idle(conn: psycopg.Connection) -> None:
    """Tell the writers this relay is about to wait: their next commit should wake it.

    The relay must claim once more after this and before it waits (see the module's doc).
    """
    conn.execute(_NOTIFY, [IDLE_CHANNEL], prepare=True)


def wait(conn: psycopg.Connection, timeout: float) -> bool:
    """Block until a notification arrives (True) or `timeout` seconds pass (False).

    Notifications that arrived while the connection ran other queries are buffered by
    psycopg and count too; all pending ones are drained, since one claim serves them all.
    """
    woken = bool(list(conn.notifies(timeout=timeout, stop_after=1)))
    if woken:
        list(conn.notifies(timeout=0))
    return woken
