"""The dashboard in a real Chromium (Debian's), against real uvicorn, relay and consumer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect, sync_playwright
from rest_framework.authtoken.models import Token

from bench.bulk_counts import insert_counts
from tests.support.processes import api_client

pytestmark = [pytest.mark.slow, pytest.mark.stack, pytest.mark.django_db(transaction=True)]
LIVE = 15_000  # ms: an API write reaches the page through the relay, Kafka and the consumer


@pytest.fixture
def open_page() -> Iterator[Callable[[], Page]]:
    """Opens Chromium on first call: Playwright's event loop forbids the ORM from then on, so
    tests prepare the database first."""
    with ExitStack() as stack:

        def open_() -> Page:
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--headless", "--no-sandbox", "--disable-gpu"],
            )
            stack.callback(browser.close)
            return browser.new_page(viewport={"width": 1360, "height": 1000})

        yield open_


@pytest.fixture
def viewer() -> tuple[str, str]:
    """A user who is not staff but holds the dashboard's view permission."""
    user = get_user_model().objects.create_user("viewer", password="see-it-all")
    user.user_permissions.add(Permission.objects.get(codename="view_dashboard"))
    return "viewer", "see-it-all"


@pytest.fixture
def live_stack(app_stack) -> tuple[str, httpx.Client]:
    """Web, relay and consumer running; the web's URL and an API client with a writer's token.

    Ready once the consumer has its partitions: a write made before would be shown by its
    catch-up at start, and coalesced in one first batch with the writes after it."""
    writer = get_user_model().objects.create_user("writer", password="not-used")
    _, url = app_stack("web")
    app_stack("relay", "--metrics-port=0")
    app_stack("consume", "--metrics-port=0").wait_assigned()
    return url, api_client(url, Token.objects.create(user=writer).key)


def log_in(page: Page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/")
    expect(page).to_have_url(f"{url}/login/?next=/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{url}/")
    expect(page.locator("#connection")).to_have_text("live")


def test_a_viewer_sees_the_chart_and_api_writes_arrive_without_reload(
    live_stack, open_page, viewer
):
    url, api = live_stack
    created = api.post("/api/counts/", json={"name": "in the browser", "value": 1})
    assert created.status_code == 201, created.text
    count_id = created.json()["id"]
    page = open_page()

    log_in(page, url, *viewer)
    row = page.locator(f'tr[data-count-id="{count_id}"]')
    expect(row.locator(".value")).to_have_text("1", timeout=LIVE)
    expect(page.locator("#rate-chart canvas")).to_be_visible()
    expect(page.locator("#rate-sum")).not_to_have_text("…")
    events_before = page.locator("#rate-sum").inner_text()
    page.evaluate("window.stillTheSamePage = true")

    increment = api.post(f"/api/counts/{count_id}/increment/", json={"delta": 41})
    assert increment.status_code == 200, increment.text

    expect(row.locator(".value")).to_have_text("42", timeout=LIVE)
    expect(row).to_have_class("changed")
    expect(page.locator("#value-total")).to_have_text("42", timeout=LIVE)
    expect(page.locator("#rate-sum")).not_to_have_text(events_before, timeout=LIVE)
    expect(page.locator("#feed li").first).to_contain_text("in the browser = 42")
    assert page.evaluate("window.stillTheSamePage") is True

    # The count's own page: its history chart follows the stream too.
    row.locator("a").click()
    expect(page).to_have_url(f"{url}/counts/{count_id}/")
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#history-chart canvas")).to_be_visible()
    expect(page.locator("#changes li")).to_have_count(2)
    api.post(f"/api/counts/{count_id}/increment/", json={"delta": 1})
    expect(page.locator("#count-value")).to_have_text("43", timeout=LIVE)
    expect(page.locator("#changes li").first).to_contain_text("+1")
    expect(page.locator("#changes li")).to_have_count(3)


def test_search_finds_a_count_among_100000(app_stack, open_page, viewer):
    insert_counts(100_000, "load-")
    _, url = app_stack("web")
    page = open_page()

    log_in(page, url, *viewer)
    size = len(page.request.get(f"{url}/").body())
    assert size < 300_000, f"the page is {size} bytes"
    expect(page.locator("#count-total")).to_have_text("100,000")
    expect(page.locator("#page-label")).to_have_text("page 1 of 4,000")

    page.fill("#search", "LOAD-09999")
    expect(page.locator("#counts tr")).to_have_count(10)
    page.fill("#search", "load-077777")
    expect(page.locator("#counts tr")).to_have_count(1)
    expect(page.locator("#counts tr .name")).to_have_text("load-077777")
    expect(page.locator("#counts tr .value")).to_have_text(f"{77777 * 7919 % 100003:,}")
    page.click("#counts tr .name a")
    expect(page.locator("#count-name")).to_have_text("load-077777")


def test_an_anonymous_visitor_is_turned_away(app_stack, open_page):
    _, url = app_stack("web")
    page = open_page()

    page.goto(f"{url}/")
    expect(page).to_have_url(f"{url}/login/?next=/")
    expect(page.locator("#id_password")).to_be_visible()
    assert page.request.get(f"{url}/stream/").status == 401
    assert page.request.get(f"{url}/counts.json").status == 401
    page.fill("#id_username", "nobody")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_be_visible()


def test_64_bit_values_and_their_total_stay_exact_live(live_stack, open_page, viewer):
    """JavaScript numbers and Lua numbers are doubles: past 2**53 they round. The page must
    show values and the total to the last digit, also when they change live."""
    url, api = live_stack
    big = 2**62 + 1  # not a double
    ids = [
        api.post("/api/counts/", json={"name": name, "value": value}).json()["id"]
        for name, value in (("big", big), ("small", -(2**53) - 1))
    ]
    page = open_page()
    log_in(page, url, *viewer)
    big_row = page.locator(f'tr[data-count-id="{ids[0]}"] .value')
    expect(big_row).to_have_text(f"{big:,}", timeout=LIVE)
    expect(page.locator("#value-total")).to_have_text(f"{big - 2**53 - 1:,}", timeout=LIVE)

    assert api.post(f"/api/counts/{ids[0]}/increment/", json={"delta": 2}).status_code == 200

    expect(big_row).to_have_text(f"{big + 2:,}", timeout=LIVE)
    expect(page.locator("#value-total")).to_have_text(f"{big + 2 - 2**53 - 1:,}", timeout=LIVE)
