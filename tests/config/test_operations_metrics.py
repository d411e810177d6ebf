"""The web process's /metrics: request figures and the outbox backlog read from the database."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from outbox.models import OutboxMessage


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def requests_key(route: str, status: int = 200) -> tuple:
    labels = (("method", "GET"), ("route", route), ("status", str(status)))
    return ("countstream_http_requests_total", labels)


def outbox_row(n: int, state: str, age: timedelta) -> OutboxMessage:
    row = OutboxMessage.objects.create(
        event_id=f"00000000-0000-0000-0000-{n:012d}",
        topic="t",
        key=f"k{n}",
        value=b"{}",
        lane=0,
        state=state,
    )
    OutboxMessage.objects.filter(pk=row.pk).update(created_at=timezone.now() - age)
    return row


@pytest.mark.django_db
def test_metrics_report_the_outbox_backlog_from_the_database(client):
    outbox_row(1, "pending", timedelta(seconds=90))
    outbox_row(2, "pending", timedelta(seconds=5))
    outbox_row(3, "parked", timedelta(hours=1))
    outbox_row(4, "published", timedelta(hours=2))

    samples = scrape(client)
    assert samples[("countstream_outbox_query_up", ())] == 1
    assert samples[("countstream_outbox_pending_rows", ())] == 2
    assert samples[("countstream_outbox_parked_rows", ())] == 1
    assert 90 <= samples[("countstream_outbox_oldest_pending_age_seconds", ())] < 120


@pytest.mark.django_db
def test_metrics_count_and_time_requests_by_route(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    client.get("/no-such-page")
    after = scrape(client)

    healthz, unmatched = requests_key("healthz"), requests_key("<unmatched>", 404)
    assert after[healthz] - before.get(healthz, 0) == 3
    assert after[unmatched] - before.get(unmatched, 0) == 1
    count = (
        "countstream_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "healthz")),
    )
    assert after[count] - before.get(count, 0) == 3


@pytest.mark.django_db
def test_metrics_need_the_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")


def test_metrics_refuse_remote_clients_without_a_token(client):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


@pytest.mark.django_db
def test_metrics_count_requests_served_through_asgi(client, async_client):
    key = requests_key("healthz")
    before = scrape(client).get(key, 0)
    response = async_to_sync(async_client.get)("/healthz")
    assert response.status_code == 200
    assert scrape(client)[key] - before == 1
