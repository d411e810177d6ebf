"""The read model's indexes, totals, histories and rate buckets, kept by the apply script."""

from __future__ import annotations

import time
import uuid

import pytest

from dashboard import read_model, selectors
from dashboard.events import CountEvent
from dashboard.selectors import PAGE_SIZE, counts_page, summary
from infra.redis import redis_client

# Each test has Redis keys of its own (the pipeline fixture).
pytestmark = [pytest.mark.stack, pytest.mark.usefixtures("pipeline")]

NOW_MS = int(time.time() * 1000)


class Counts:
    """Events for counts made up on the spot (the read model needs no database)."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}

    def create(self, name: str, value: int = 0) -> str:
        count_id = str(uuid.uuid4())
        self.versions[count_id] = 1
        self._apply(count_id, "created", value, name)
        return count_id

    def set(self, count_id: str, value: int) -> None:
        self.versions[count_id] += 1
        self._apply(count_id, "value", value)

    def rename(self, count_id: str, name: str, value: int) -> None:
        self.versions[count_id] += 1
        self._apply(count_id, "updated", value, name)

    def delete(self, count_id: str) -> None:
        self.versions[count_id] += 1
        self._apply(count_id, "deleted", 0)

    def _apply(self, count_id: str, action: str, value: int, name: str | None = None) -> None:
        version = self.versions[count_id]
        event = CountEvent(str(uuid.uuid4()), count_id, version, NOW_MS, action, value, name)
        read_model.apply_events([event])


def names(page: dict) -> list[str]:
    return [row["name"] for row in page["rows"]]


def test_totals_stay_exact_beyond_what_a_double_holds():
    counts = Counts()
    values = [2**62, 2**62 + 1, -(2**63), 2**63 - 1, 123_456_789_012, -7]
    ids = [counts.create(f"c{i}", value) for i, value in enumerate(values)]
    assert summary(1)["value_total"] == str(sum(values))

    counts.set(ids[0], 2**63 - 2)
    counts.delete(ids[2])
    values[0] = 2**63 - 2
    del values[2]
    figures = summary(1)
    assert (figures["count_total"], figures["value_total"]) == (5, str(sum(values)))
    assert [e["name"] for e in figures["top"]][:2] == ["c3", "c0"]


def test_the_table_pages_in_name_order_and_searches_by_prefix_ignoring_case():
    counts = Counts()
    for name in ("Banana", "apple", "apricot", "Äpfel", "cherry"):
        counts.create(name)
    assert names(counts_page()) == ["apple", "apricot", "Banana", "cherry", "Äpfel"]
    assert names(counts_page("AP")) == ["apple", "apricot"]
    assert names(counts_page("äp")) == ["Äpfel"]
    assert counts_page("nothing")["rows"] == []

    apple = next(i for i in counts.versions if counts_page("apple")["rows"][0]["id"] == i)
    counts.rename(apple, "zebra", 0)
    assert names(counts_page("ap")) == ["apricot"]
    assert names(counts_page("z")) == ["zebra"]
    counts.delete(apple)
    assert counts_page("z")["matches"] == 0 and counts_page()["matches"] == 4


def test_pages_hold_page_size_rows_and_a_page_past_the_end_is_the_last():
    counts = Counts()
    for n in range(2 * PAGE_SIZE + 3):
        counts.create(f"n{n:03d}")
    first, last = counts_page(page=1), counts_page(page=99)
    assert (len(first["rows"]), first["pages"]) == (PAGE_SIZE, 3)
    assert first["matches"] == 2 * PAGE_SIZE + 3
    assert (last["page"], names(last)) == (3, ["n050", "n051", "n052"])


def test_a_count_keeps_a_bounded_history_of_its_values(settings):
    settings.DASHBOARD_HISTORY_POINTS = 3
    counts = Counts()
    count_id = counts.create("h", 1)
    for value in (2, 3, 4, 5):
        counts.set(count_id, value)
    detail = selectors.count_detail(count_id)
    assert [value for _, value in detail["history"]] == ["3", "4", "5"]
    assert all(ms == NOW_MS for ms, _ in detail["history"])
    counts.delete(count_id)
    assert selectors.count_detail(count_id) is None
    assert redis_client().exists(read_model.history_key(count_id)) == 0


def test_events_are_counted_per_second_of_their_time():
    counts = Counts()
    count_id = counts.create("r")
    counts.set(count_id, 5)
    counts.set(count_id, 5)  # no change, but an event all the same
    rate = dict(map(tuple, summary(read_model.RATE_WINDOW_SECONDS)["rate"]))
    assert rate[NOW_MS // 1000] == 3
    assert sum(rate.values()) == 3


def test_drifted_indexes_and_totals_are_rebuilt_from_the_counts():
    counts = Counts()
    for n, value in enumerate((5, 2**62, -1)):
        counts.create(f"k{n}", value)
    figures = ("count_total", "value_total", "top")
    before = (counts_page(), [summary(1)[f] for f in figures])
    client = redis_client()
    client.delete(read_model.by_name_key(), read_model.by_value_key(), read_model.totals_key())

    assert read_model.rebuild_indexes() is True
    assert read_model.rebuild_indexes() is False
    assert (counts_page(), [summary(1)[f] for f in figures]) == before
