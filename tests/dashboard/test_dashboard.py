"""The dashboard page and its live stream: real Redis, real uvicorn, a real Chromium."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from counts import cache, services
from dashboard import read_model
from dashboard.events import CountEvent
from tests.support.sse import server_sent_events

pytestmark = pytest.mark.stack


def next_events(url: str, kind: str, how_many: int, **headers: str) -> list[dict[str, str]]:
    """Connect, read the first `how_many` events of this kind, disconnect (10 s at most)."""
    found, seen = [], []
    deadline = time.monotonic() + 10
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in server_sent_events(response):
            seen.append(event)
            if event["event"] == kind:
                found.append(event)
            if len(found) == how_many:
                return found
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no {how_many} {kind} events in {seen}")


def value_event(count_id: str, version: int, value: int) -> CountEvent:
    return CountEvent(str(uuid.uuid4()), count_id, version, 1, "value", value)


@pytest.mark.django_db
def test_page_shows_counts_totals_top_feed_and_operations(client, pipeline, settings):
    settings.DASHBOARD_PUBLIC = True
    alpha = services.count_create(name="alpha", value=5)
    services.count_create(name="beta", value=2**62)
    pipeline.publish_pending()
    pipeline.consume_once()
    services.count_increment(count_id=alpha.id, delta=1)  # not relayed: one row of backlog

    response = client.get("/")

    assert response.status_code == 200
    state = response.context["state"]
    assert [(c["name"], c["value"]) for c in state["table"]["rows"]] == [
        ("alpha", "5"),
        ("beta", "4611686018427387904"),
    ]
    assert (state["count_total"], state["value_total"]) == (2, str(5 + 2**62))
    assert [c["name"] for c in state["top"]] == ["beta", "alpha"]
    assert {"alpha", "beta"} <= {change.get("name") for change in state["feed"]}
    assert state["operations"]["relay_backlog"] == 1
    html = response.content.decode()
    assert f'data-count-id="{alpha.id}"' in html and "4,611,686,018,427,387,909" in html
    assert 'id="dashboard-state"' in html


@pytest.mark.django_db
def test_stream_refuses_a_malformed_last_event_id(client, settings):
    settings.DASHBOARD_PUBLIC = True
    response = client.get("/stream/", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_stream_resumes_from_last_event_id_without_losing_or_repeating(app_stack):
    _, url = app_stack("web", DASHBOARD_PUBLIC="true")
    count_id = str(uuid.uuid4())
    read_model.apply_events([value_event(count_id, 1, 1)])
    page_loaded_at = read_model.snapshot().stream_id
    read_model.apply_events([value_event(count_id, 2, 2)])

    (seen,) = next_events(f"{url}/stream/?last_id={page_loaded_at}", "refresh", 1)
    assert json.loads(seen["data"])["changes"][0]["value"] == "2"
    read_model.apply_events([value_event(count_id, 3, 3)])  # while disconnected
    read_model.apply_events([value_event(count_id, 4, 4)])

    resumed = next_events(f"{url}/stream/", "refresh", 2, **{"Last-Event-ID": seen["id"]})
    assert [json.loads(e["data"])["changes"][0]["value"] for e in resumed] == ["3", "4"]
    assert seen["id"] < resumed[0]["id"] < resumed[1]["id"]

    # Too long away: what it missed was trimmed, so the page is told to reload.
    cache.redis_client().xtrim(read_model.stream_key(), maxlen=1, approximate=False)
    assert next_events(f"{url}/stream/", "reset", 1, **{"Last-Event-ID": seen["id"]})
    (operations,) = next_events(f"{url}/stream/", "operations", 1)
    assert {"relay_backlog", "consumer_lag", "events_per_second"} <= set(
        json.loads(operations["data"])
    )
