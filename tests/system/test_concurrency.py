"""Concurrent writers of one count lose no update, and its events form one unbroken chain.

The writers really commit (transactional_db), from several threads and from several
processes, each with its own PostgreSQL connection.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

import pytest
from django.db import connection

from counts.contract import validate as validate_event
from counts.models import Count
from counts.selectors import count_get
from counts.services import (
    count_create,
    count_delete,
    count_increment,
    count_set,
    count_update_info,
)
from infra.topics import topic_name
from outbox.models import OutboxMessage
from tests.support.outbox_watch import decode
from tests.support.paths import ROOT
from tests.support.processes import database_url, process_env

pytestmark = pytest.mark.django_db(transaction=True)


def run_in_threads(workers: int, work) -> None:
    """Start `work(i)` in each thread at once; re-raise the first failure."""
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            work(index)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()  # each thread opened its own

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def events_of(count: Count) -> list[tuple[str, dict]]:
    """The count's events in outbox id order (the relay's order), each schema-checked."""
    rows = OutboxMessage.objects.filter(key=str(count.id)).order_by("id")
    events = []
    for row in rows:
        logical = row.headers["event_type"]
        assert row.topic == topic_name(logical)
        value = decode(row)
        validate_event(logical, value)
        events.append((logical, value))
    return events


def assert_unbroken_chain(count: Count, start: int) -> list[dict]:
    """Value events chain old -> new from `start` to the final value; versions go 1, 2, 3...

    (Counts here are created with value 0, so each change emits exactly one event.)
    """
    events = events_of(count)
    assert [value["version"] for _, value in events] == list(range(1, len(events) + 1))
    values = [value for topic, value in events if topic == "count-value-updated"]
    expected_old = start
    for value in values:
        assert value["old_value"] == expected_old, value
        expected_old = value["new_value"]
    final = count_get(count_id=count.id)
    assert expected_old == final.value
    assert final.version == len(events)
    return values


def test_concurrent_increments_sets_and_renames_from_threads():
    count = count_create(name="hot")
    workers, rounds = 6, 25

    def work(index: int) -> None:
        for step in range(rounds):
            if index == 0 and step % 5 == 0:
                count_set(count_id=count.id, value=1000 * step + 1)
            elif index == 1 and step % 5 == 0:
                count_update_info(count_id=count.id, description=f"round {step}")
            else:
                count_increment(count_id=count.id, delta=index + 1)

    run_in_threads(workers, work)
    values = assert_unbroken_chain(count, start=0)
    increments = workers * rounds - 2 * (rounds // 5)
    assert len(values) == increments + rounds // 5


def test_concurrent_increments_from_threads_lose_nothing():
    count = count_create(name="pure")
    count_set(count_id=count.id, value=-50)
    deltas = [1, -2, 3, 5]

    def work(index: int) -> None:
        for _ in range(40):
            count_increment(count_id=count.id, delta=deltas[index])

    run_in_threads(len(deltas), work)
    values = assert_unbroken_chain(count, start=0)
    assert count_get(count_id=count.id).value == -50 + 40 * sum(deltas)
    assert len(values) == 1 + 40 * len(deltas)


INCREMENTER = """
import sys
import django
django.setup()
from counts.services import count_increment
for _ in range(int(sys.argv[2])):
    count_increment(count_id=sys.argv[1], delta=int(sys.argv[3]))
"""


def test_concurrent_increments_from_processes_lose_nothing():
    count = count_create(name="multi")
    env = process_env(database_url(connection.settings_dict))
    deltas, rounds = [1, 7, -3], 60
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, str(count.id), str(rounds), str(delta)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for delta in deltas
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert_unbroken_chain(count, start=0)
    assert count_get(count_id=count.id).value == rounds * sum(deltas)


def test_a_delete_racing_increments_is_the_last_event_and_carries_the_final_value():
    count = count_create(name="doomed")

    def work(index: int) -> None:
        for step in range(30):
            if index == 0 and step == 10:
                count_delete(count_id=count.id)
                return
            with contextlib.suppress(Count.DoesNotExist):  # increments after the delete
                count_increment(count_id=count.id, delta=1)

    run_in_threads(4, work)
    events = events_of(count)
    *changes, deleted = events
    assert deleted[0] == "count-info-updated" and deleted[1]["action"] == "deleted"
    assert [value["version"] for _, value in events] == list(range(1, len(events) + 1))
    assert deleted[1]["value"] == len(changes) - 1 == changes[-1][1]["new_value"]
