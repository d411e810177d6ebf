"""ETag and If-Match: a write based on a stale read is refused (412) and writes nothing."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import connections, transaction
from rest_framework.test import APIClient

from counts.models import Count
from counts.selectors import count_get
from counts.services import StaleVersion, count_create, count_increment, count_set
from tests.support.api_clients import token_client
from tests.support.locks import a_session_waits_for_a_lock
from tests.support.outbox_watch import OutboxWatch, info_event, value_event
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("private_cache_keys")]


@pytest.fixture
def client() -> APIClient:
    return token_client("editor")


@pytest.fixture
def count() -> Count:
    count = count_create(name="edited", value=10)
    count_increment(count_id=count.id, delta=1)  # version 2
    return count


def detail(count: Count) -> str:
    return f"/api/counts/{count.id}/"


WRITES = {
    "patch": lambda api, count, **h: api.patch(
        detail(count), {"description": "new"}, format="json", **h
    ),
    "delete": lambda api, count, **h: api.delete(detail(count), **h),
    "set": lambda api, count, **h: api.post(
        f"{detail(count)}set/", {"value": 99}, format="json", **h
    ),
}


def state(count: Count) -> tuple:
    fresh = Count.objects.filter(pk=count.pk).first()
    return fresh and (fresh.description, fresh.value, fresh.version)


def test_reads_and_writes_carry_the_version_as_etag(client, count):
    assert client.get(detail(count))["ETag"] == '"2"'
    response = client.post(f"{detail(count)}increment/", format="json")
    assert response["ETag"] == '"3"'
    created = client.post("/api/counts/", {"name": "fresh"}, format="json")
    assert created["ETag"] == '"1"'


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("if_match", ['"2"', "*", '"1", "2"', 'W/"1", "2"'])
def test_a_write_whose_if_match_holds_goes_through(client, count, write, if_match):
    response = WRITES[write](client, count, HTTP_IF_MATCH=if_match)
    assert response.status_code in (200, 204)
    assert state(count) != ("", 11, 2)


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize(
    "if_match",
    ['"1"', '"3"', '"1", "3"', 'W/"2"', '"two"', "2", '"2', "", "W/2", "**"],
)
def test_a_stale_or_foreign_if_match_is_a_412_and_writes_nothing(client, count, write, if_match):
    """Weak ETags, and values that are no ETag of ours, match nothing (RFC 9110 13.1.1)."""
    watch = OutboxWatch()
    response = WRITES[write](client, count, HTTP_IF_MATCH=if_match)
    assert response.status_code == 412
    assert "If-Match" in response.json()["detail"]
    assert response["ETag"] == '"2"'  # the current version, to read again or retry with
    assert state(count) == ("", 11, 2)
    watch.assert_unchanged()


def test_of_two_clients_editing_from_one_read_the_second_is_refused(client, count):
    """The lost update If-Match exists for: both read version 2, both write with it."""
    seen = client.get(detail(count))["ETag"]
    watch = OutboxWatch()
    first = client.patch(detail(count), {"description": "A"}, format="json", HTTP_IF_MATCH=seen)
    second = client.patch(detail(count), {"description": "B"}, format="json", HTTP_IF_MATCH=seen)
    assert (first.status_code, second.status_code) == (200, 412)
    assert state(count) == ("A", 11, 3)
    watch.assert_events(info_event(count.id, "updated", "edited", 11, 3))


@pytest.mark.parametrize("write", WRITES)
def test_an_if_match_on_an_unknown_count_is_a_404(client, write):
    response = WRITES[write](client, Count(id=uuid.uuid4()), HTTP_IF_MATCH='"1"')
    assert response.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_version_is_checked_under_the_rows_lock(count):
    """A set with if_version=2 that waits for the lock of a concurrent increment sees the
    increment's version 3 once it gets the row: refused, though 2 was current when it began."""
    holding = threading.Event()
    release = threading.Event()

    def concurrent_increment() -> None:
        try:
            with transaction.atomic():
                count_increment(count_id=count.id, delta=1)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=concurrent_increment)
    writer.start()
    assert holding.wait(10)
    outcome: list[object] = []

    def stale_set() -> None:
        try:
            outcome.append(count_set(count_id=count.id, value=0, if_version={2}))
        except StaleVersion as exc:
            outcome.append(exc)
        finally:
            connections.close_all()

    setter = threading.Thread(target=stale_set)
    setter.start()
    wait_for(lambda: a_session_waits_for_a_lock(Count._meta.db_table), 10, "the set to wait")
    release.set()
    writer.join(10)
    setter.join(10)

    assert isinstance(outcome[0], StaleVersion) and outcome[0].version == 3
    fresh = count_get(count_id=count.id)
    assert (fresh.value, fresh.version) == (12, 3)


def test_the_services_take_no_precondition_by_default(count):
    """The admin calls them without one: it keeps working as before."""
    watch = OutboxWatch()
    count_set(count_id=count.id, value=5)
    watch.assert_events(value_event(count.id, 11, 5, 3))
