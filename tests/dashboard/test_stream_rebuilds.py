"""What an open dashboard page hears when the read model is rebuilt or repaired: a `reset`
after `consume --from-beginning`, and the reconcile job's repairs as refreshes
(docs/caching.md). The page is an SSE client of a real uvicorn; events go out through the
real relay and consumer."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import httpx
import pytest

from counts import services
from dashboard import read_model
from dashboard.services import reconcile_read_model
from infra.redis import redis_client
from tests.support.pipeline import database_truth, read_model_state
from tests.support.sse import server_sent_events
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]


class OpenPage(threading.Thread):
    """The page's EventSource: every event of the stream since the page's snapshot."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{base_url}/stream/?last_id={read_model.snapshot().stream_id}"
        self.events: list[dict[str, str]] = []
        self.closed = threading.Event()
        self.start()

    def run(self) -> None:
        with httpx.stream("GET", self.url, timeout=30) as response:
            for event in server_sent_events(response):
                if self.closed.is_set():
                    return
                self.events.append(event)

    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events if event["event"] != "operations"]

    def changes_after(self, position: int) -> dict[str, str]:
        """Count id -> value, from the refreshes after the `position`th event."""
        refreshes = [e for e in self.events[position:] if e["event"] == "refresh"]
        changes = [c for e in refreshes for c in json.loads(e["data"])["changes"]]
        return {c["id"]: c["value"] for c in changes if "value" in c}


@pytest.fixture
def open_page(app_stack, pipeline):
    counts = [services.count_create(name=f"shown-{n}", value=n + 1) for n in range(3)]
    pipeline.relay_pending()
    pipeline.consume_once()
    _, url = app_stack("web", DASHBOARD_PUBLIC="true")  # the stream without logging in
    page = OpenPage(url)
    wait_for(lambda: page.events, 30, "the stream to open")
    yield page, counts
    page.closed.set()
    page.join(10)  # at its next event: the stream sends one every 2 s


def test_a_rebuild_from_the_beginning_tells_open_pages_to_reset(open_page, app_stack):
    page, counts = open_page
    rebuild = app_stack("consume", "--from-beginning", "--once", "--metrics-port=0")
    assert rebuild.process.wait(60) == 0, rebuild.log()
    assert read_model_state() == database_truth()

    wait_for(lambda: "reset" in page.kinds(), 10, "the reset event")
    reset_at = next(i for i, e in enumerate(page.events) if e["event"] == "reset")
    expected = {str(count.id): str(count.value) for count in counts}
    wait_for(lambda: page.changes_after(reset_at) == expected, 10, "the replayed counts")


def test_reconcile_repairs_reach_open_pages(open_page):
    page, counts = open_page
    drifted = counts[0]
    entry = json.dumps({"name": drifted.name, "value": "-1", "vv": 1, "nv": 1})
    redis_client().hset(read_model.counts_key(), str(drifted.id), entry)  # no event, no refresh

    repairs = reconcile_read_model(grace=timedelta(0))
    assert str(drifted.id) in [count_id for ids in repairs.values() for count_id in ids]
    wait_for(
        lambda: page.changes_after(0).get(str(drifted.id)) == str(drifted.value),
        10,
        "the repair on the open page",
    )
