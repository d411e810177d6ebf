"""The dashboard's read model in Redis, and the live stream that announces its changes.

- `dash:counts`: hash count id -> JSON entry {"name", "value", "vv", "nv", "k"}; `vv`/`nv` are
  the versions the value and the name were taken from, `k` the case-folded name. Values are
  decimal strings because Lua (where entries are merged) has only doubles.
- `dash:by-name`: sorted set of "<folded name>\\0<id>" (all scores 0): the counts table's
  order, pages and prefix search (ZRANGE, ZRANGEBYLEX). `dash:by-value`: id by value (top).
- `dash:totals`: hash {"hi", "lo"}: the sum of all values is hi * 10^9 + lo, exact.
- `dash:deleted`: hash count id -> the version that deleted it (a tombstone), so a late or
  replayed event never brings a deleted count back.
- `dash:stream`: a Redis Stream; every batch that changed something appends one entry with
  its changes. Its ids are the SSE event ids, so a reconnecting page resumes exactly.
- `dash:feed`: list of the newest changes that events made (repairs are not in it).
- `dash:history:<id>`: list of "<event ms> <value>": the values its recent events set (bounded).
- `dash:rate:<second>`: events of that second (event time), kept for the 15-minute chart.
- `dash:consumer`: the consumer's figures (lag, events/s) for the operations panel.

All changes go through one Lua script (apply.lua) that applies an update only if its version
is at least the stored one (and its content differs), which makes replays, duplicates and
out-of-order events harmless, and keeps the indexes, totals, feed and histories in the same
step. The same script serves the consumer and the reconciler.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from redis import Redis
from redis.exceptions import ResponseError, WatchError

from counts.cache import queue_invalidation
from dashboard.events import CountEvent
from infra.redis import redis_client, redis_key

STREAM_MAXLEN = 10_000
FEED_ENTRIES = 20
FEED_KEPT = 50
TOP_COUNTS = 5
RATE_WINDOW_SECONDS = 15 * 60
HISTORY_TTL_SECONDS = 7 * 24 * 3600
# The tombstone version of a count the database no longer has: ids are never reused, so
# no event about it can ever be newer.
GONE_FOREVER = 10**12
_APPLY = (Path(__file__).parent / "apply.lua").read_text()


def counts_key() -> str:
    return redis_key("dash", "counts")


def tombstones_key() -> str:
    return redis_key("dash", "deleted")


def stream_key() -> str:
    return redis_key("dash", "stream")


def consumer_stats_key() -> str:
    return redis_key("dash", "consumer")


def by_name_key() -> str:
    return redis_key("dash", "by-name")


def by_value_key() -> str:
    return redis_key("dash", "by-value")


def totals_key() -> str:
    return redis_key("dash", "totals")


def feed_key() -> str:
    return redis_key("dash", "feed")


def history_key(count_id: str) -> str:
    return redis_key("dash", "history", count_id)


def rate_key(second: int | str) -> str:
    return redis_key("dash", "rate", str(second))


def name_member(name: str | None, count_id: str) -> bytes:
    """A count's member of the by-name index: its case-folded name (or id), NUL, its id."""
    return f"{fold(name) if name else count_id}\0{count_id}".encode()


def fold(text: str) -> str:
    """Case-folded, so search ignores case (done here: Lua knows no Unicode)."""
    return text.casefold()


@dataclass
class Update:
    """The newest known state of one count, merged from any number of its events.

    Field names are the script's: `vv`/`nv` are the versions of `value`/`name`, `dv` the
    version that deleted the count, `ts` the newest event time (epoch ms), `created` whether
    its events include the count's creation. `lift` is a tombstone (as stored) to remove
    first if it is still there: reconcile's repair of a deletion the database contradicts.
    """

    id: str
    ts: int = 0
    vv: int = 0
    value: str | None = None
    nv: int | None = None
    name: str | None = None
    dv: int | None = None
    created: bool | None = None
    lift: str | None = None

    def merge(self, event: CountEvent) -> None:
        self.ts = max(self.ts, event.timestamp)
        if event.action == "created":
            self.created = True
        if event.action == "deleted":
            self.dv = max(self.dv or 0, event.version)
            return
        if event.version > self.vv:
            self.vv, self.value = event.version, str(event.value)
        if event.name is not None and event.version > (self.nv or 0):
            self.nv, self.name = event.version, event.name

    def as_argument(self) -> dict:
        if self.dv:
            return {"id": self.id, "ts": self.ts, "dv": self.dv}
        argument = {k: v for k, v in vars(self).items() if v is not None}
        if self.name is not None:
            argument["k"] = fold(self.name)
        return argument


def coalesce(events: Iterable[CountEvent]) -> dict[str, Update]:
    """One update per count, holding the newest value and name its events carry."""
    updates: dict[str, Update] = {}
    for event in events:
        updates.setdefault(event.count_id, Update(event.count_id)).merge(event)
    return updates


class ScriptRefused(ResponseError):
    """The script failed on its input (a Lua error) and wrote nothing: retrying the same
    input fails the same way. Other errors (Redis away, out of memory, read-only) pass."""


def apply_updates(
    updates: Mapping[str, Update], *, repair: bool = False, rate: Mapping[int, int] | None = None
) -> list[dict]:
    """Invalidate the counts' caches, apply the updates, announce the changes: one round trip.

    `repair`: the updates come from the database, not from events (they reach the figures
    and open pages, not the feed). `rate`: events per second of their time, for the chart.
    Returns the changes that took effect. Raises ScriptRefused, or another RedisError
    (nothing is then known to be applied, and the caller must retry before it commits its
    offsets).
    """
    if not updates:
        return []
    pipe = redis_client().pipeline(transaction=True)
    queue_invalidation(pipe, updates)
    arguments = json.dumps([update.as_argument() for update in updates.values()])
    keys = [
        counts_key(),
        tombstones_key(),
        stream_key(),
        by_name_key(),
        by_value_key(),
        totals_key(),
        feed_key(),
    ]
    history = (history_key(""), settings.DASHBOARD_HISTORY_POINTS, HISTORY_TTL_SECONDS)
    rates = (json.dumps(rate or {}), rate_key(""), RATE_WINDOW_SECONDS + 60)
    arguments = (arguments, STREAM_MAXLEN, *history, int(repair), FEED_KEPT, *rates)
    pipe.eval(_APPLY, len(keys), *keys, *arguments)
    results = pipe.execute(raise_on_error=False)
    if errors := [result for result in results if isinstance(result, Exception)]:
        if errors[0] is results[-1] and str(errors[0]).startswith("user_script:"):
            raise ScriptRefused(str(errors[0])) from errors[0]
        raise errors[0]
    return json.loads(results[-1])


def apply_events(events: Iterable[CountEvent]) -> list[dict]:
    events = list(events)
    return apply_updates(coalesce(events), rate=Counter(e.timestamp // 1000 for e in events))


def apply_events_refusing_poison(events: Iterable[CountEvent]) -> dict[CountEvent, str]:
    """Apply the events; return those the script refuses, each with its error. A refused
    batch is applied again event by event, so only the guilty events are left out."""
    events = list(events)
    try:
        apply_events(events)
        return {}
    except ScriptRefused:
        pass
    refused = {}
    for event in events:
        try:
            apply_events([event])
        except ScriptRefused as exc:
            refused[event] = str(exc)
    return refused


def tombstones(count_ids: Iterable[str]) -> dict[str, str]:
    """The tombstones, as stored, of those of the counts that have one."""
    ids = list(count_ids)
    found = redis_client().hmget(tombstones_key(), ids) if ids else []
    return {i: t.decode() for i, t in zip(ids, found, strict=True) if t is not None}


def seen_counts(count_ids: Iterable[str]) -> set[str]:
    """The ids the read model holds or has a tombstone for."""
    ids = list(count_ids)
    if not ids:
        return set()
    pipe = redis_client().pipeline(transaction=False)
    pipe.hmget(counts_key(), ids)
    pipe.hmget(tombstones_key(), ids)
    held, tombstoned = pipe.execute()
    return {i for i, a, b in zip(ids, held, tombstoned, strict=True) if a or b}


def reset() -> None:
    """Empty the read model before a rebuild; tombstones stay, and pages are told to reload."""
    client = redis_client()
    histories = list(client.scan_iter(match=history_key("*"), count=1000))
    pipe = client.pipeline(transaction=True)
    pipe.delete(counts_key(), by_name_key(), by_value_key(), totals_key(), feed_key())
    for start in range(0, len(histories), 1000):
        pipe.unlink(*histories[start : start + 1000])
    pipe.xadd(stream_key(), {"reset": "1"}, maxlen=STREAM_MAXLEN, approximate=True)
    pipe.execute()


@dataclass
class Snapshot:
    """Everything the dashboard page shows, read at one instant."""

    counts: dict[str, dict] = field(default_factory=dict)
    feed: list[dict] = field(default_factory=list)
    stream_id: str = "0"

    @property
    def total(self) -> int:
        return sum(entry["value"] for entry in self.counts.values())

    @property
    def top(self) -> list[dict]:
        ranked = sorted(self.counts.values(), key=lambda e: (-e["value"], e["name"]))
        return ranked[:TOP_COUNTS]


def count_entry(count_id: str, entry: dict) -> dict:
    """One count of the counts hash (its parsed JSON): id, name, value and the newest
    version applied."""
    return {
        "id": count_id,
        "name": entry.get("name") or count_id,
        "value": int(entry["value"]),
        "version": max(entry["vv"], entry["nv"]),
    }


def snapshot(client: Redis | None = None) -> Snapshot:
    """The whole read model, the feed and the newest stream id, atomically (MULTI)."""
    pipe = (client or redis_client()).pipeline(transaction=True)
    pipe.hgetall(counts_key())
    pipe.lrange(feed_key(), 0, FEED_ENTRIES - 1)
    pipe.xrevrange(stream_key(), count=1)
    raw_counts, feed, newest = pipe.execute()
    counts = {
        cid.decode(): count_entry(cid.decode(), json.loads(raw)) for cid, raw in raw_counts.items()
    }
    return Snapshot(counts=counts, feed=[json.loads(c) for c in feed], stream_id=newest_id(newest))


def newest_id(newest: list) -> str:
    """The id an XREVRANGE ... COUNT 1 of the stream returned, or "0" when it is empty."""
    return newest[0][0].decode() if newest else "0"


def total_of(hi: bytes | None, lo: bytes | None) -> int:
    """The sum of all values, from the totals hash's fields: hi * 10^9 + lo."""
    return int(hi or 0) * 10**9 + int(lo or 0)


def rebuild_indexes(client: Redis | None = None) -> bool:
    """Rebuild the name and value indexes and the totals from the counts hash if they drifted
    (or predate them); True if they had to be."""
    return rebuild_indexes_reading_counts(client)[0]


def rebuild_indexes_reading_counts(client: Redis | None = None) -> tuple[bool, dict[str, dict]]:
    """rebuild_indexes(), and the counts it read (as snapshot().counts), for a caller that
    needs them too: one read of the counts hash. WATCH makes a concurrent change retry it."""
    client = client or redis_client()
    while True:
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(counts_key())
                raw_entries = pipe.hgetall(counts_key()).items()
                entries = {cid.decode(): json.loads(raw) for cid, raw in raw_entries}
                counts = {cid: count_entry(cid, entry) for cid, entry in entries.items()}
                by_name = {name_member(e.get("name"), cid): 0 for cid, e in entries.items()}
                by_value = {cid: count["value"] for cid, count in counts.items()}
                total = sum(by_value.values())
                shown_total = total_of(*pipe.hmget(totals_key(), "hi", "lo"))
                if pipe.zcard(by_name_key()) == len(entries) and shown_total == total:
                    return False, counts
                pipe.multi()
                pipe.delete(by_name_key(), by_value_key(), totals_key())
                _add_in_chunks(pipe, by_name_key(), by_name)
                _add_in_chunks(pipe, by_value_key(), by_value)
                hi, lo = divmod(abs(total), 10**9)
                sign = -1 if total < 0 else 1
                pipe.hset(totals_key(), mapping={"hi": sign * hi, "lo": sign * lo})
                pipe.execute()
                return True, counts
            except WatchError:
                continue


def _add_in_chunks(pipe, key: str, members: Mapping, chunk: int = 10_000) -> None:
    items = list(members.items())
    for start in range(0, len(items), chunk):
        pipe.zadd(key, dict(items[start : start + chunk]))


def publish_consumer_stats(stats: Mapping[str, object]) -> None:
    redis_client().hset(consumer_stats_key(), mapping={k: str(v) for k, v in stats.items()})


def consumer_stats() -> dict[str, str]:
    """The consumer's figures as `publish_consumer_stats` stored them."""
    raw = redis_client().hgetall(consumer_stats_key())
    return {key.decode(): value.decode() for key, value in raw.items()}
