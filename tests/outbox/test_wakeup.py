"""The relay wake-up against the real PostgreSQL: writers NOTIFY only a relay that idles."""

from __future__ import annotations

import psycopg
import pytest

from counts import services
from outbox import wakeup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def relay_connection(test_database_url: str):
    """A connection that listens and announces as an idle relay does; the writers' thread
    starts afresh, so it has heard no announcement yet."""
    wakeup.stop_notifier()
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        wakeup.listen(conn)
        yield conn
    wakeup.stop_notifier()


SENTINEL = "sentinel"


def wake_ups(conn: psycopg.Connection, expect_one: bool = True) -> int:
    """The writers' NOTIFYs: (when one is expected) wait for it, then count the others that
    arrive before a sentinel NOTIFY this connection sends. Notifications come in commit
    order, so no NOTIFY committed before the sentinel can arrive after it."""
    if expect_one and not list(conn.notifies(timeout=30, stop_after=1)):
        return 0
    conn.execute("SELECT pg_notify(%s, %s)", [wakeup.CHANNEL, SENTINEL])
    for others, notify in enumerate(conn.notifies(timeout=30)):
        if notify.payload == SENTINEL:
            return expect_one + others
    raise AssertionError("the sentinel NOTIFY never came back")


def writer_thread_busy(conn: psycopg.Connection) -> bool:
    """Whether the writers' thread is running a query right now (its NOTIFY)."""
    query = (
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'countstream-wakeup' AND state = 'active')"
    )
    return conn.execute(query).fetchone()[0]


def test_writers_wake_a_relay_once_per_announcement_and_never_while_it_is_busy(
    relay_connection,
):
    count = services.count_create(name="woken")  # a fresh writer assumes a relay may idle
    assert wake_ups(relay_connection) == 1

    for _ in range(5):  # no announcement since: the relay is busy and claims again anyway
        services.count_increment(count_id=count.id)
    assert wake_ups(relay_connection, expect_one=False) == 0

    for _ in range(3):
        wakeup.announce_idle(relay_connection)
        services.count_increment(count_id=count.id)
        services.count_increment(count_id=count.id)
        assert wake_ups(relay_connection) == 1


def test_a_commit_made_before_the_writer_heard_the_announcement_still_wakes_the_relay(
    relay_connection,
):
    count = services.count_create(name="crossed")
    assert wake_ups(relay_connection) == 1
    services.count_increment(count_id=count.id)  # no relay idles yet: no NOTIFY
    assert wake_ups(relay_connection, expect_one=False) == 0

    wakeup.announce_idle(relay_connection)  # the relay's last claim may have missed it

    assert wake_ups(relay_connection) == 1


def test_an_announcement_without_new_commits_sends_nothing(relay_connection):
    services.count_create(name="quiet")
    assert wake_ups(relay_connection) == 1

    wakeup.announce_idle(relay_connection)

    assert wake_ups(relay_connection, expect_one=False) == 0


def test_an_announcement_that_arrives_during_the_writers_notify_is_heard(
    relay_connection, monkeypatch
):
    # The writer's NOTIFY takes half a second, so the relay's announcement reaches the
    # thread with that query's reply (psycopg keeps it aside), not on the socket it waits on.
    monkeypatch.setattr(wakeup, "_NOTIFY", "SELECT pg_notify(%s, ''), pg_sleep(0.5)")
    count = services.count_create(name="crossing")
    wait_for(lambda: writer_thread_busy(relay_connection), 10, "the writer's NOTIFY", every=0.01)
    relay_connection.execute(f"NOTIFY {wakeup.IDLE_CHANNEL}")  # the relay announces meanwhile
    assert wake_ups(relay_connection) == 1

    services.count_increment(count_id=count.id)

    assert wake_ups(relay_connection) == 1


def test_a_commit_made_during_the_writers_notify_wakes_a_relay_that_announced_meanwhile(
    relay_connection, monkeypatch
):
    # Both reach the thread while its NOTIFY runs: the announcement comes with the reply
    # (psycopg keeps it aside) and the commit only sets a flag (no relay was idle yet).
    monkeypatch.setattr(wakeup, "_NOTIFY", "SELECT pg_notify(%s, ''), pg_sleep(1)")
    count = services.count_create(name="crossing-commit")
    wait_for(lambda: writer_thread_busy(relay_connection), 10, "the writer's NOTIFY", every=0.01)
    relay_connection.execute(f"NOTIFY {wakeup.IDLE_CHANNEL}")  # the relay announces ...
    services.count_increment(count_id=count.id)  # ... and then misses this commit
    assert writer_thread_busy(relay_connection)  # the commit came while the NOTIFY ran
    assert wake_ups(relay_connection) == 1  # the first commit's NOTIFY

    assert wake_ups(relay_connection) == 1  # and one for the crossing commit
