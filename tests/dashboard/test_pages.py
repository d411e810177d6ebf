"""The dashboard's pages and the table's JSON pages, served from the read model."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model

from dashboard import read_model
from dashboard.read_model import Update
from dashboard.selectors import PAGE_SIZE

pytestmark = [pytest.mark.django_db, pytest.mark.stack, pytest.mark.usefixtures("pipeline")]


@pytest.fixture
def viewer(client):
    client.force_login(get_user_model().objects.create_user("v", password="pw", is_staff=True))
    return client


def shown(how_many: int, prefix: str = "count") -> list[str]:
    """Counts in the read model only (as a rebuild puts them there), in batches."""
    ids = [str(uuid.uuid4()) for _ in range(how_many)]
    for start in range(0, how_many, 1000):
        read_model.apply_updates(
            {
                cid: Update(cid, 1, 1, str(n), 1, f"{prefix}-{n:06d}")
                for n, cid in enumerate(ids[start : start + 1000], start)
            },
            repair=True,
        )
    return ids


def test_the_page_holds_one_table_page_whatever_the_number_of_counts(viewer):
    shown(3000)
    response = viewer.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count("<tr data-count-id=") == PAGE_SIZE
    assert response.context["state"]["count_total"] == 3000
    assert response.context["state"]["value_total"] == str(sum(range(3000)))
    assert len(response.content) < 100_000


def test_the_page_opens_at_a_search_given_in_its_address(viewer):
    shown(30)
    state = viewer.get("/?q=COUNT-00001&page=1").context["state"]
    expected = [f"count-{n:06d}" for n in range(10, 20)]
    assert [row["name"] for row in state["table"]["rows"]] == expected


def test_counts_json_pages_and_searches(viewer):
    shown(60)
    second = viewer.get("/counts.json?page=2").json()
    assert (second["page"], second["pages"], second["matches"]) == (2, 3, 60)
    assert second["rows"][0]["name"] == f"count-{PAGE_SIZE:06d}"
    found = viewer.get("/counts.json", {"q": "count-000042"}).json()
    assert [(r["name"], r["value"]) for r in found["rows"]] == [("count-000042", "42")]


@pytest.mark.parametrize("query", ["page=0", "page=two", f"q={'x' * 101}"])
def test_counts_json_refuses_nonsense(viewer, query):
    response = viewer.get(f"/counts.json?{query}")
    assert response.status_code == 400 and "page must be" in response.json()["detail"]


def test_counts_json_needs_a_viewer(client):
    assert client.get("/counts.json").status_code == 401


def test_a_count_page_shows_the_count_and_its_history(viewer):
    (count_id,) = shown(1, prefix="solo")
    read_model.apply_updates({count_id: Update(count_id, 2, 2, "7")})
    response = viewer.get(f"/counts/{count_id}/")
    assert response.status_code == 200 and b"solo-000000" in response.content
    # The history is what events did: the repair that showed the count left no point.
    assert [value for _, value in response.context["state"]["history"]] == ["7"]
    assert viewer.get(f"/counts/{uuid.uuid4()}/").status_code == 404
