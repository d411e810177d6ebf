"""What the dashboard pages show, read from the read model (Redis) and the outbox.

No read walks all counts: totals are kept by the consumer, the table is a page of the
by-name index, the top counts come from the by-value index, the chart from per-second
buckets. So the page costs the same with ten counts or a million.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable

from redis import Redis

from dashboard import read_model
from dashboard.read_model import RATE_WINDOW_SECONDS, TOP_COUNTS
from infra.redis import redis_client
from outbox.selectors import outbox_backlog

PAGE_SIZE = 25
# Scores of the by-value index are doubles: take more than needed, then order exactly.
_TOP_CANDIDATES = TOP_COUNTS * 4
# The live figures carry the newest seconds of the chart (late events still add to them).
RECENT_RATE_SECONDS = 10


def relay_backlog() -> dict[str, float]:
    """Outbox rows the relay has not published yet, and the age of the oldest one."""
    backlog = outbox_backlog()
    return {"relay_backlog": backlog.pending, "relay_oldest_age_s": round(backlog.oldest_age_s, 1)}


def pipeline_figures(consumer_stats: dict[str, str]) -> dict[str, float | None]:
    """Relay backlog, consumer lag and rate, and how old the consumer's figures are, as the
    consumer published them (no database read: the live stream sends these)."""
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


def operations(consumer_stats: dict[str, str]) -> dict:
    """The live figures (the stream's `operations` event): the pipeline's figures, the
    totals, the top counts and the chart's newest seconds."""
    return {**pipeline_figures(consumer_stats), **summary(RECENT_RATE_SECONDS)}


def _entry(count_id: str, raw: bytes) -> dict:
    """One count as the pages get it; values are strings (JavaScript has no int64)."""
    entry = read_model.count_entry(count_id, json.loads(raw))
    return {**entry, "value": str(entry["value"])}


def _entries(client: Redis, count_ids: Iterable[str]) -> list[dict]:
    """The entries of these counts, in this order (those deleted meanwhile left out)."""
    ids = list(count_ids)
    raws = client.hmget(read_model.counts_key(), ids) if ids else []
    return [_entry(cid, raw) for cid, raw in zip(ids, raws, strict=True) if raw is not None]


def _rate(seconds: list[int], counts: list[bytes | None]) -> list[list[int]]:
    return [[second, int(n or 0)] for second, n in zip(seconds, counts, strict=True)]


def summary(rate_seconds: int, client: Redis | None = None) -> dict:
    """Totals, top counts and events per second of the last `rate_seconds` (to now)."""
    client = client or redis_client()
    now = int(time.time())
    seconds = list(range(now - rate_seconds + 1, now + 1))
    pipe = client.pipeline(transaction=True)
    pipe.hlen(read_model.counts_key())
    pipe.hmget(read_model.totals_key(), "hi", "lo")
    pipe.zrevrange(read_model.by_value_key(), 0, _TOP_CANDIDATES - 1)
    pipe.mget([read_model.rate_key(second) for second in seconds])
    count_total, (hi, lo), top_ids, rate = pipe.execute()
    candidates = _entries(client, (cid.decode() for cid in top_ids))
    top = sorted(candidates, key=lambda e: (-int(e["value"]), e["name"]))[:TOP_COUNTS]
    return {
        "count_total": count_total,
        "value_total": str(read_model.total_of(hi, lo)),
        "top": top,
        "rate": _rate(seconds, rate),
    }


def counts_page(query: str = "", page: int = 1, client: Redis | None = None) -> dict:
    """One page of the counts table in name order; `query` keeps the names that start with
    it (ignoring case). `page` beyond the last gives the last."""
    client = client or redis_client()
    key = read_model.by_name_key()
    if query:
        low = b"[" + read_model.fold(query).encode()
        high = b"(" + read_model.fold(query).encode() + b"\xff"  # \xff is never in UTF-8
        matches = client.zlexcount(key, low, high)
    else:
        matches = client.zcard(key)
    pages = max(1, math.ceil(matches / PAGE_SIZE))
    page = min(max(1, page), pages)
    start = (page - 1) * PAGE_SIZE
    if query:
        members = client.zrangebylex(key, low, high, start=start, num=PAGE_SIZE)
    else:
        members = client.zrange(key, start, start + PAGE_SIZE - 1)
    ids = (member.rsplit(b"\0", 1)[1].decode() for member in members)
    return {
        "rows": _entries(client, ids),
        "matches": matches,
        "page": page,
        "pages": pages,
        "query": query,
    }


def _history(raw_points: list[bytes]) -> list[list]:
    """[[event ms, value as string], ...], oldest first."""
    return [[int(ms), value] for ms, value in (p.decode().split(" ", 1) for p in raw_points)]


def count_detail(count_id: str) -> dict | None:
    """A count's entry and its recent values, with the stream id they were read at."""
    pipe = redis_client().pipeline(transaction=True)
    pipe.hget(read_model.counts_key(), count_id)
    pipe.lrange(read_model.history_key(count_id), 0, -1)
    pipe.xrevrange(read_model.stream_key(), count=1)
    raw, history, newest = pipe.execute()
    if raw is None:
        return None
    return {
        "count": _entry(count_id, raw),
        "history": _history(history),
        "stream_id": read_model.newest_id(newest),
    }


def dashboard_state(query: str = "", page: int = 1) -> dict:
    """Everything the page renders. The feed and the stream id are read in one MULTI, so
    the page resumes the stream exactly where its feed ends; figures read after it are as
    new or newer, and the page drops the refreshes that are older than what it shows."""
    client = redis_client()
    pipe = client.pipeline(transaction=True)
    pipe.lrange(read_model.feed_key(), 0, read_model.FEED_ENTRIES - 1)
    pipe.xrevrange(read_model.stream_key(), count=1)
    feed, newest = pipe.execute()
    return {
        **summary(RATE_WINDOW_SECONDS, client),
        "table": counts_page(query, page, client),
        "feed": sorted(map(json.loads, feed), key=lambda change: -change["ts"]),
        "stream_id": read_model.newest_id(newest),
        # The page is rendered once: its relay backlog is read fresh from the database.
        "operations": {**pipeline_figures(read_model.consumer_stats()), **relay_backlog()},
    }
