"""An API client reads its own writes at once, before any consumer has seen their events.

No consumer runs here: only the write view's own invalidation after its commit can make
the second read fresh. The consumer's invalidation stays the guarantee for every other
writer (tests/dashboard/test_consumer.py).
"""

import pytest
from rest_framework.test import APIClient

from counts.models import Count
from counts.services import count_create, count_increment
from tests.support.api_clients import token_client

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.stack,
    pytest.mark.usefixtures("private_cache_keys"),
]  # the cache


@pytest.fixture
def client() -> APIClient:
    return token_client("writer")


@pytest.fixture
def count() -> Count:
    return count_create(name="visits", value=10)


def url(count: Count, action: str = "") -> str:
    return f"/api/counts/{count.id}/{action}"


def test_a_cached_count_is_fresh_after_the_clients_increment(client, count):
    assert client.get(url(count)).json()["value"] == 10  # now cached
    client.post(url(count, "increment/"), {"delta": 5}, format="json")
    response = client.get(url(count))
    assert response.json()["value"] == 15
    assert response["ETag"] == '"2"'


def test_a_cached_count_is_fresh_after_the_clients_set_and_rename(client, count):
    client.get(url(count))
    client.post(url(count, "set/"), {"value": -3}, format="json")
    client.patch(url(count), {"name": "renamed"}, format="json")
    assert {k: client.get(url(count)).json()[k] for k in ("name", "value")} == {
        "name": "renamed",
        "value": -3,
    }


def test_a_deleted_count_is_gone_for_the_client_at_once(client, count):
    client.get(url(count))
    assert client.delete(url(count)).status_code == 204
    assert client.get(url(count)).status_code == 404


def test_a_write_outside_the_api_waits_for_the_consumer(client, count):
    """The view's invalidation is the API's own: other writers rely on the events."""
    client.get(url(count))
    count_increment(count_id=count.id, delta=1)
    assert client.get(url(count)).json()["value"] == 10
