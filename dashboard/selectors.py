"""What the dashboard page shows: the read model, plus the operations figures."""

from __future__ import annotations

import time

from dashboard import read_model
from outbox.selectors import outbox_backlog


def relay_backlog() -> dict[str, float]:
    """Outbox rows the relay has not published yet, and the age of the oldest one."""
    backlog = outbox_backlog()
    return {"relay_backlog": backlog.pending, "relay_oldest_age_s": round(backlog.oldest_age_s, 1)}


def operations(consumer_stats: dict[str, str]) -> dict[str, float | None]:
    """The operations panel as the consumer last published it (no database read): relay
    backlog, consumer lag and rate, and how long ago the consumer reported them."""
    reported_at = consumer_stats.get("at")
    age = time.time() - int(reported_at) / 1000 if reported_at else None
    backlog, oldest = consumer_stats.get("relay_backlog"), consumer_stats.get("relay_oldest_age_s")
    return {
        "relay_backlog": None if backlog is None else int(backlog),
        "relay_oldest_age_s": None if oldest is None else float(oldest),
        "consumer_lag": int(consumer_stats.get("lag", 0)),
        "events_per_second": float(consumer_stats.get("events_per_second", 0)),
        "consumer_seen_s_ago": None if age is None else round(age, 1),
    }


def _for_js(entry: dict) -> dict:
    """Values travel as strings: JavaScript numbers cannot hold every int64."""
    return {**entry, "value": str(entry["value"])}


def dashboard_state() -> dict:
    """Everything the page renders, from one atomic read of the read model."""
    snapshot = read_model.snapshot()
    return {
        "counts": sorted(map(_for_js, snapshot.counts.values()), key=lambda e: e["name"]),
        "total": str(snapshot.total),
        "top": [_for_js(entry) for entry in snapshot.top],
        "feed": snapshot.feed,
        "stream_id": snapshot.stream_id,
        # The page is rendered once: its relay backlog is read fresh from the database.
        "operations": {**operations(read_model.consumer_stats()), **relay_backlog()},
    }
