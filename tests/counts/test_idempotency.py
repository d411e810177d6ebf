"""Idempotency-Key on the API's writes, against the real PostgreSQL (and Kafka, via the relay)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from counts import events, idempotency
from counts.idempotency import Answer, prune_expired_keys, run_once
from counts.models import Count, IdempotencyKey
from counts.selectors import count_get
from counts.services import count_create, count_increment
from infra.topics import topic_name
from outbox.models import OutboxMessage
from tests.support.api_clients import token_client
from tests.support.locks import a_session_waits_for_a_lock
from tests.support.outbox_watch import OutboxWatch
from tests.support.relay import pending_count, read_back, wait_until_serving
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/api/counts/"


def increment_url(count: Count) -> str:
    return f"{LIST}{count.id}/increment/"


@pytest.fixture
def client() -> APIClient:
    return token_client("retrier")


@pytest.fixture
def count() -> Count:
    return count_create(name="retried", value=10)


def post(client: APIClient, url: str, body: dict | None, key: str | None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(url, body, format="json", **headers)


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.usefixtures("count_topics")
def test_a_retried_increment_changes_the_value_once_and_publishes_one_event(
    client, count, start_relay
):
    first = post(client, increment_url(count), {"delta": 5}, key="retry-1")
    retry = post(client, increment_url(count), {"delta": 5}, key="retry-1")

    assert first.status_code == retry.status_code == 200
    assert retry.content == first.content  # the first answer, byte for byte
    assert retry["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert count_get(count_id=count.id).value == 15
    rows = list(OutboxMessage.objects.filter(key=str(count.id)).order_by("id"))
    assert len(rows) == 3  # created (with its value), and the increment once

    wait_until_serving(start_relay())
    wait_for(lambda: pending_count() == 0, 30, "the relay to publish")
    received = read_back({str(row.event_id) for row in rows})
    changes = [
        m.value
        for m in received
        if m.key == str(count.id) and m.topic == topic_name(events.COUNT_VALUE_UPDATED)
    ]
    assert [(c["old_value"], c["new_value"]) for c in changes] == [(0, 10), (10, 15)]


def test_a_retried_create_answers_the_first_201_with_its_location(client):
    watch = OutboxWatch()
    first = post(client, LIST, {"name": "signups"}, key="create-1")
    retry = post(client, LIST, {"name": "signups"}, key="create-1")

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.content == first.content
    assert retry["Location"] == first["Location"]
    assert Count.objects.filter(name="signups").count() == 1
    assert len(watch.new_rows()) == 1


def test_a_retried_set_writes_once(client, count):
    watch = OutboxWatch()
    url = f"{LIST}{count.id}/set/"
    assert post(client, url, {"value": 3}, key="set-1").status_code == 200
    count_increment(count_id=count.id, delta=1)  # someone else moves on meanwhile
    retry = post(client, url, {"value": 3}, key="set-1")
    assert (retry.status_code, retry.json()["value"]) == (200, 3)
    assert count_get(count_id=count.id).value == 4  # the retry did not set it back
    assert len(watch.new_rows()) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [("increment/", {"delta": 6}), ("increment/", {}), ("set/", {"value": 5})],
    ids=["other-body", "no-body", "other-endpoint"],
)
def test_a_key_reused_for_another_request_is_a_422_and_writes_nothing(client, count, path, body):
    assert post(client, increment_url(count), {"delta": 5}, key="once").status_code == 200
    watch = OutboxWatch()

    response = post(client, f"{LIST}{count.id}/{path}", body, key="once")

    assert response.status_code == 422
    assert response.json() == {
        "detail": "This Idempotency-Key was already used with a different request."
    }
    assert count_get(count_id=count.id).value == 15
    watch.assert_unchanged()


def test_keys_are_per_user(client, count):
    other = token_client("someone-else")
    assert post(client, increment_url(count), {"delta": 1}, key="shared").status_code == 200
    response = post(other, increment_url(count), {"delta": 1}, key="shared")
    assert "Idempotent-Replayed" not in response
    assert count_get(count_id=count.id).value == 12


def test_a_refused_write_keeps_no_key_so_its_retry_runs(client):
    edge = count_create(name="edge", value=2**63 - 1)
    refused = post(client, increment_url(edge), {"delta": 1}, key="after-fix")
    assert refused.status_code == 409
    assert not IdempotencyKey.objects.exists()
    count_increment(count_id=edge.id, delta=-1)
    retry = post(client, increment_url(edge), {"delta": 1}, key="after-fix")
    assert (retry.status_code, retry.json()["value"]) == (200, 2**63 - 1)
    assert "Idempotent-Replayed" not in retry


def test_writes_without_a_key_are_not_deduplicated(client, count):
    for _ in range(2):
        assert post(client, increment_url(count), {"delta": 1}, key=None).status_code == 200
    assert count_get(count_id=count.id).value == 12
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("key", ["", "with space", "é", "k" * 256])
def test_a_malformed_key_is_a_400_and_writes_nothing(client, count, key):
    watch = OutboxWatch()
    response = post(client, increment_url(count), {"delta": 1}, key=key)
    assert response.status_code == 400
    assert list(response.json()) == ["Idempotency-Key"]
    watch.assert_unchanged()


def test_an_expired_key_is_claimed_afresh(client, count, settings):
    assert post(client, increment_url(count), {"delta": 1}, key="old").status_code == 200
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))
    response = post(client, increment_url(count), {"delta": 1}, key="old")
    assert "Idempotent-Replayed" not in response
    assert count_get(count_id=count.id).value == 12


def test_prune_deletes_only_keys_past_the_retention(client, count, settings):
    settings.IDEMPOTENCY_KEY_RETENTION_HOURS = 1
    for key in ("a", "b", "c"):
        post(client, increment_url(count), {"delta": 1}, key=key)
    IdempotencyKey.objects.exclude(key="c").update(created_at=timezone.now() - timedelta(hours=2))
    assert prune_expired_keys(batch_size=1) == 2
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["c"]


# --- two requests with one key at once -------------------------------------------------------


@pytest.mark.parametrize("first_fails", [False, True], ids=["first-commits", "first-fails"])
def test_a_concurrent_request_with_the_key_waits_for_the_first(count, first_fails):
    """The second request is sent while the first holds the key uncommitted: it waits, then
    replays the first's answer (or, if the first failed, does the write itself)."""
    user = get_user_model().objects.create_user("racer")
    claimed = threading.Event()
    results: dict[str, object] = {}

    def increment() -> Answer:
        return Answer(200, {"value": count_increment(count_id=count.id, delta=1).value})

    def first_write() -> Answer:
        claimed.set()
        keys_table = IdempotencyKey._meta.db_table
        wait_for(lambda: a_session_waits_for_a_lock(keys_table), 10, "the second request to wait")
        if first_fails:
            raise RuntimeError("the first request fails after its claim")
        return increment()

    def request(name: str, write) -> None:
        try:
            results[name] = run_once(user_id=user.pk, key="k", fingerprint="f", write=write)
        except Exception as exc:
            results[name] = exc
        finally:
            connections.close_all()

    first = threading.Thread(target=request, args=("first", first_write))
    first.start()
    assert claimed.wait(10)
    second = threading.Thread(target=request, args=("second", increment))
    second.start()
    first.join(30)
    second.join(30)

    assert count_get(count_id=count.id).value == 11  # one write, whichever did it
    assert OutboxMessage.objects.filter(key=str(count.id)).count() == 3  # created, one change
    if first_fails:
        assert isinstance(results["first"], RuntimeError)
        assert results["second"] == (Answer(200, {"value": 11}), False)
    else:
        assert results["first"] == (Answer(200, {"value": 11}), False)
        assert results["second"] == (Answer(200, {"value": 11}), True)


def test_a_burst_of_requests_with_one_key_writes_once(count):
    """Eight clients send the same keyed increment at once through the API."""
    token = Token.objects.create(user=get_user_model().objects.create_user("burst")).key
    start = threading.Barrier(8)
    statuses: list[tuple[int, str | None]] = []

    def send() -> None:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        try:
            start.wait(10)
            response = post(api, increment_url(count), {"delta": 1}, key="burst")
            statuses.append((response.status_code, response.get("Idempotent-Replayed")))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert Counter(statuses) == {(200, None): 1, (200, "true"): 7}
    assert count_get(count_id=count.id).value == 11
    assert OutboxMessage.objects.filter(key=str(count.id)).count() == 3  # created, one change


def test_the_key_commits_with_the_write_and_its_event(count):
    """A key row exists exactly when its write and outbox row committed."""
    user = get_user_model().objects.create_user("atomic")

    def write_then_fail() -> Answer:
        count_increment(count_id=count.id, delta=1)
        raise idempotency.KeyInUse("simulated failure after the write")

    with pytest.raises(idempotency.KeyInUse):
        run_once(user_id=user.pk, key=str(uuid.uuid4()), fingerprint="f", write=write_then_fail)
    assert not IdempotencyKey.objects.exists()
    assert count_get(count_id=count.id).value == 10
    assert OutboxMessage.objects.filter(key=str(count.id)).count() == 2  # the creation only
