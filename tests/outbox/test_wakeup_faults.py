"""A lost NOTIFY or a broken wake-up connection costs at most the relay's fallback poll.

The relay runs with a 3 s `--poll-interval`, so neither the default 1 s poll nor a quick
retry can hide a relay that waits for a NOTIFY that never comes (docs/relay.md, Wake-up).
"""

from __future__ import annotations

import re

import psycopg
import pytest
from django.db import connection

from counts import services
from outbox import wakeup
from outbox.models import OutboxMessage
from tests.support.processes import AppProcess
from tests.support.relay import wait_until_serving
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("count_topics"),
]

POLL_SECONDS = 3.0


def pending_rows() -> int:
    return OutboxMessage.objects.filter(state=OutboxMessage.State.PENDING).count()


def wait_until_published(what: str) -> None:
    """Within the poll interval, with room for a loaded machine, and no more."""
    wait_for(lambda: pending_rows() == 0, 2 * POLL_SECONDS, what, every=0.02)


def terminate_backends(application_name: str, pid: int | None = None) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s "
            "AND (%s::int IS NULL OR pid = %s::int)",
            [application_name, pid, pid],
        )
        return [pid for pid, terminated in cursor.fetchall() if terminated]


@pytest.fixture
def idle_relay(start_relay, test_database_url) -> AppProcess:
    """A relay with a long poll that has published a first write and announced it idles
    (heard on the announcement channel)."""
    with psycopg.connect(test_database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {wakeup.IDLE_CHANNEL}")
        relay = start_relay("--poll-interval", str(POLL_SECONDS))
        wait_until_serving(relay)
        services.count_create(name="first", value=1)
        wait_until_published("the first write")
        assert list(listener.notifies(timeout=10, stop_after=1)), "the relay never idled"
    return relay


def test_a_commit_whose_notify_is_lost_is_published_by_the_poll(idle_relay):
    # Rows made pending by a plain UPDATE (an operator's repair in SQL) send no NOTIFY.
    count = services.count_create(name="repaired", value=1)
    rows = OutboxMessage.objects.filter(key=str(count.id))
    wait_until_published("the second write")
    rows.update(state=OutboxMessage.State.PENDING)
    assert pending_rows() == rows.count() > 0
    wait_until_published("the poll to find the rows")


def test_a_killed_writer_wake_up_connection_still_gets_the_commit_published(idle_relay):
    killed = terminate_backends("countstream-wakeup")
    assert killed, "the writers' wake-up thread had no connection"
    count = services.count_create(name="after the kill", value=1)
    wait_until_published("the write after the kill")
    assert OutboxMessage.objects.filter(key=str(count.id), state="published").exists()


def test_a_killed_relay_listener_still_gets_the_commit_published(idle_relay):
    listener_pid = int(re.search(r"backend pid (\d+)", idle_relay.log())[1])  # claims, LISTENs
    assert terminate_backends("countstream-relay", listener_pid) == [listener_pid]
    services.count_create(name="after the relay's kill", value=1)
    wait_until_published("the write after the relay lost its listener")
    assert "lost PostgreSQL" in idle_relay.log()
    assert idle_relay.alive
