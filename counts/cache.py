"""Read-through caching that the consumer can invalidate precisely and without races.

Every cached entry belongs to a *generation*: a Redis integer per count (`gen:count:<id>`)
and one for all list pages (`gen:count-list`). An entry stores the generation it was loaded
under, and counts as a hit only while that generation is current. A reader fetches the entry
and the current generation in one MGET; on a miss it loads from the database and stores the
result with a Lua check-and-set that succeeds only if the generation is still the one it
saw *before* the database read. The consumer bumps generations (one pipeline per batch).

So a reader that loaded the old row just before a write cannot put it back after the
consumer invalidated it: the generation moved, and its late fill is refused. This is the
memcache "lease" cure; docs/caching.md explains it with the interleaving.

Redis down never breaks a read: the loader's result is returned and the error logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from redis.client import Pipeline
from redis.exceptions import RedisError

from infra.redis import redis_client, redis_key

logger = logging.getLogger(__name__)

_FILL_IF_GENERATION = """
local current = redis.call('GET', KEYS[2]) or '0'
if current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""

# KEYS: the list generation, then pairs of (count generation, count entry).
_INVALIDATE = """
redis.call('INCR', KEYS[1])
for i = 2, #KEYS, 2 do
    redis.call('INCR', KEYS[i])
    redis.call('DEL', KEYS[i + 1])
end
"""


def count_key(count_id: str) -> str:
    return redis_key("count", str(count_id))


def count_generation_key(count_id: str) -> str:
    return redis_key("gen", "count", str(count_id))


def list_key(query: str) -> str:
    return redis_key("count-list", query)


def list_generation_key() -> str:
    return redis_key("gen", "count-list")


def read_through(key: str, generation_key: str, loader: Callable[[], Any]) -> Any:
    """Return the cached JSON value at `key`, or load it, cache it if still current, return it.

    A loader result of None (not found) is returned and never cached.
    """
    try:
        client = redis_client()
        cached, generation = client.mget([key, generation_key])
    except RedisError as exc:
        logger.warning("cache unavailable, reading from the database: %s", exc)
        return loader()
    seen = generation.decode() if generation is not None else "0"
    if cached is not None:
        entry = json.loads(cached)
        if entry["generation"] == seen:
            return entry["value"]
    value = loader()
    if value is not None:
        payload = json.dumps({"generation": seen, "value": value}, separators=(",", ":"))
        try:
            client.eval(
                _FILL_IF_GENERATION, 2, key, generation_key, seen, payload, settings.CACHE_TIMEOUT
            )
        except RedisError as exc:
            logger.warning("cache fill failed, serving uncached: %s", exc)
    return value


def invalidate_counts(count_ids: Iterable[str]) -> None:
    """Bump the generations of these counts and of all list pages; drop their entries.

    One round trip for any number of counts; raises RedisError. The consumer queues the
    same invalidation into its read-model transaction instead (read_model.py).
    """
    pipe = redis_client().pipeline(transaction=False)
    queue_invalidation(pipe, count_ids)
    pipe.execute()


def invalidate_on_commit(count_id: str) -> None:
    """Once the current transaction commits, invalidate this count for the writer's next read.

    Read-your-writes for API clients: a GET right after a write must not be served the
    entry cached before it. Best effort: the consumer's invalidation, driven by the event,
    is the guarantee (it also covers writers that do not call this), so a Redis error here
    is only logged. After the commit, so that no reader can refill the old row meanwhile.
    """
    transaction.on_commit(partial(_invalidate_quietly, [str(count_id)]))


def _invalidate_quietly(count_ids: list[str]) -> None:
    try:
        invalidate_counts(count_ids)
    except RedisError as exc:
        logger.warning("cache invalidation after a write failed (the consumer's follows): %s", exc)


def queue_invalidation(pipe: Pipeline, count_ids: Iterable[str]) -> None:
    """Add the invalidation of these counts to `pipe` (one command), to share a round trip."""
    keys = [list_generation_key()]
    for count_id in count_ids:
        keys += [count_generation_key(count_id), count_key(count_id)]
    pipe.eval(_INVALIDATE, len(keys), *keys)


def drop_all_entries() -> int:
    """Delete every cached count and list entry (a rebuild); return how many were dropped."""
    client = redis_client()
    patterns = (count_key("*"), list_key("*"))
    keys = [key for pattern in patterns for key in client.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 1000):
        client.unlink(*keys[start : start + 1000])
    client.incr(list_generation_key())
    return len(keys)
