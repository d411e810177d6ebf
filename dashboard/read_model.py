"""The dashboard's read model in Redis, and the live stream that announces its changes.

- `dash:counts`: hash count id -> JSON entry {"name", "value", "vv", "nv"}; `vv`/`nv` are the
  versions the value and the name were taken from. Values are decimal strings because Lua
  (where entries are merged) has only doubles, which cannot hold every int64.
- `dash:deleted`: hash count id -> the version that deleted it (a tombstone), so a late or
  replayed event never brings a deleted count back.
- `dash:stream`: a Redis Stream; every batch that changed something appends one entry with
  its changes. Its ids are the SSE event ids, so a reconnecting page resumes exactly.
- `dash:consumer`: the consumer's figures (lag, events/s) for the operations panel.

All changes go through one Lua script that applies an update only if its version is at
least the stored one (and its content differs), which makes replays, duplicates and
out-of-order events harmless. The same script serves the consumer and the reconciler.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import ResponseError

from counts.cache import queue_invalidation
from dashboard.events import CountEvent
from infra.redis import redis_client, redis_key

STREAM_MAXLEN = 10_000
FEED_ENTRIES = 20
TOP_COUNTS = 5
# The tombstone version of a count the database no longer has: ids are never reused, so
# no event about it can ever be newer.
GONE_FOREVER = 10**12

_APPLY = """
local counts, tombstones, stream = KEYS[1], KEYS[2], KEYS[3]
-- Every change is worked out before any is written: a script that fails on its input (a
-- Lua error) has written nothing, so its events can be applied again one by one.
local writes, changes = {}, {}
local function write(...) writes[#writes + 1] = {...} end
for _, u in ipairs(cjson.decode(ARGV[1])) do
    local tomb = tonumber(redis.call('HGET', tombstones, u.id)) or 0
    if u.lift and tomb == tonumber(u.lift) then  -- a tombstone the database contradicts
        write('HDEL', tombstones, u.id)
        tomb = 0
    end
    local raw = redis.call('HGET', counts, u.id)
    local ok, entry = pcall(cjson.decode, raw or '{}')
    if not ok or type(entry) ~= 'table' then entry = {} end  -- a damaged entry is rebuilt
    entry.vv, entry.nv = tonumber(entry.vv) or 0, tonumber(entry.nv) or 0
    local change = {id = u.id, ts = u.ts}
    if u.dv then
        if u.dv > tomb then
            write('HSET', tombstones, u.id, u.dv)
            if raw then
                write('HDEL', counts, u.id)
                change.action, change.name, change.version = 'deleted', entry.name, u.dv
                changes[#changes + 1] = change
            end
        end
    else
        if u.vv > tomb and u.vv >= entry.vv and u.value ~= entry.value then
            change.old = entry.value
            entry.value, entry.vv = u.value, u.vv
            change.action = 'value'
        end
        if u.nv and u.nv > tomb and u.nv >= entry.nv and u.name ~= entry.name then
            -- A value event can arrive before its count's `created` (another topic).
            change.action = entry.name and 'renamed' or 'created'
            change.renamed_from = entry.name
            entry.name, entry.nv = u.name, u.nv
        end
        if change.action then
            change.name, change.value = entry.name, entry.value
            change.version = math.max(entry.vv, entry.nv)
            write('HSET', counts, u.id, cjson.encode(entry))
            changes[#changes + 1] = change
        end
    end
end
local encoded = #changes > 0 and cjson.encode(changes) or '[]'
for _, command in ipairs(writes) do redis.call(unpack(command)) end
if #changes > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'changes', encoded)
end
return encoded
"""


def counts_key() -> str:
    return redis_key("dash", "counts")


def tombstones_key() -> str:
    return redis_key("dash", "deleted")


def stream_key() -> str:
    return redis_key("dash", "stream")


def consumer_stats_key() -> str:
    return redis_key("dash", "consumer")


@dataclass
class Update:
    """The newest known state of one count, merged from any number of its events.

    Field names are the script's: `vv`/`nv` are the versions of `value`/`name`, `dv` the
    version that deleted the count, `ts` the newest event time (epoch ms). `lift` is a
    tombstone (as stored) to remove first if it is still there: reconcile's repair of a
    deletion the database contradicts.
    """

    id: str
    ts: int = 0
    vv: int = 0
    value: str | None = None
    nv: int | None = None
    name: str | None = None
    dv: int | None = None
    lift: str | None = None

    def merge(self, event: CountEvent) -> None:
        self.ts = max(self.ts, event.timestamp)
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
        return {k: v for k, v in vars(self).items() if v is not None}


def coalesce(events: Iterable[CountEvent]) -> dict[str, Update]:
    """One update per count, holding the newest value and name its events carry."""
    updates: dict[str, Update] = {}
    for event in events:
        updates.setdefault(event.count_id, Update(event.count_id)).merge(event)
    return updates


class ScriptRefused(ResponseError):
    """The script failed on its input (a Lua error) and wrote nothing: retrying the same
    input fails the same way. Other errors (Redis away, out of memory, read-only) pass."""


def apply_updates(updates: Mapping[str, Update]) -> list[dict]:
    """Invalidate the counts' caches, apply the updates, announce the changes: one round trip.

    Returns the changes that took effect. Raises ScriptRefused, or another RedisError
    (nothing is then known to be applied, and the caller must retry before it commits its
    offsets).
    """
    if not updates:
        return []
    pipe = redis_client().pipeline(transaction=True)
    queue_invalidation(pipe, updates)
    arguments = json.dumps([update.as_argument() for update in updates.values()])
    keys = [counts_key(), tombstones_key(), stream_key()]
    pipe.eval(_APPLY, len(keys), *keys, arguments, STREAM_MAXLEN)
    results = pipe.execute(raise_on_error=False)
    if errors := [result for result in results if isinstance(result, Exception)]:
        if errors[0] is results[-1] and str(errors[0]).startswith("user_script:"):
            raise ScriptRefused(str(errors[0])) from errors[0]
        raise errors[0]
    return json.loads(results[-1])


def apply_events(events: Iterable[CountEvent]) -> list[dict]:
    return apply_updates(coalesce(events))


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
    pipe = redis_client().pipeline(transaction=True)
    pipe.delete(counts_key())
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


def _entry(count_id: str, raw: bytes) -> dict:
    entry = json.loads(raw)
    return {
        "id": count_id,
        "name": entry.get("name") or count_id,
        "value": int(entry["value"]),
        "version": max(entry["vv"], entry["nv"]),
    }


def snapshot(client: Redis | None = None) -> Snapshot:
    """The read model and the newest stream id, atomically (MULTI), plus the recent feed."""
    pipe = (client or redis_client()).pipeline(transaction=True)
    pipe.hgetall(counts_key())
    pipe.xrevrange(stream_key(), count=FEED_ENTRIES)
    raw_counts, recent = pipe.execute()
    counts = {cid.decode(): _entry(cid.decode(), raw) for cid, raw in raw_counts.items()}
    feed = [
        change
        for _, fields in recent
        for change in reversed(json.loads(fields.get(b"changes", b"[]")))
    ][:FEED_ENTRIES]
    stream_id = recent[0][0].decode() if recent else "0"
    return Snapshot(counts=counts, feed=feed, stream_id=stream_id)


def publish_consumer_stats(stats: Mapping[str, object]) -> None:
    redis_client().hset(consumer_stats_key(), mapping={k: str(v) for k, v in stats.items()})


def consumer_stats() -> dict[str, str]:
    return decode_consumer_stats(redis_client().hgetall(consumer_stats_key()))


def decode_consumer_stats(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """The consumer's figures as `publish_consumer_stats` stored them (HGETALL's bytes)."""
    return {key.decode(): value.decode() for key, value in raw.items()}
