"""The dashboard's live stream (Server-Sent Events, served under ASGI)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET
from redis.exceptions import ResponseError

from dashboard import read_model
from dashboard.access import viewer_required
from dashboard.selectors import operations

OPERATIONS_EVERY_SECONDS = 2.0
_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


@viewer_required(login_redirect=False)
@require_GET
async def dashboard_stream(request: HttpRequest) -> HttpResponse:
    """Refreshes as they happen. On reconnect the browser sends Last-Event-ID and gets
    exactly the refreshes it missed; the first connection names the page's snapshot."""
    last_id = request.headers.get("Last-Event-ID") or request.GET.get("last_id", "$")
    if last_id != "$" and not _STREAM_ID.match(last_id):
        return HttpResponseBadRequest("Last-Event-ID must be a stream id like 1764165600123-0")
    response = StreamingHttpResponse(_events(last_id), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold events back
    return response


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    return (f"id: {event_id}\n" if event_id else "") + f"event: {event}\ndata: {data}\n\n"


async def _events(last_id: str) -> AsyncIterator[str]:
    client = aioredis.from_url(settings.REDIS_URL)
    key = read_model.stream_key()
    try:
        yield "retry: 1000\n\n"
        if last_id == "$":  # "from now on", pinned, so nothing slips between two reads
            newest = await client.xrevrange(key, count=1)
            last_id = newest[0][0].decode() if newest else "0-0"
        elif await _missed_trimmed_entries(client, key, last_id):
            yield _sse("reset", "{}")
            return
        next_operations = 0.0
        while True:
            if time.monotonic() >= next_operations:
                yield _sse("operations", json.dumps(await _operations(client)))
                next_operations = time.monotonic() + OPERATIONS_EVERY_SECONDS
            block_ms = max(1, int((next_operations - time.monotonic()) * 1000))
            for _, entries in await client.xread({key: last_id}, count=100, block=block_ms):
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    if b"reset" in fields:
                        yield _sse("reset", "{}", last_id)
                    else:
                        data = fields[b"changes"].decode()
                        yield _sse("refresh", f'{{"changes":{data}}}', last_id)
    finally:
        await client.aclose()


async def _missed_trimmed_entries(client: aioredis.Redis, key: str, last_id: str) -> bool:
    """True if entries after `last_id` may have been trimmed away (the page must reload).

    Trimming keeps the newest entries, so that is so when the stream has lost entries and
    the client's last one is older than the oldest one left.
    """
    try:
        info = await client.xinfo_stream(key)
    except ResponseError:  # no stream yet: nothing can have been missed
        return False
    if info["entries-added"] == info["length"] or not info["first-entry"]:
        return False
    return _id_tuple(last_id) < _id_tuple(info["first-entry"][0].decode())


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def _operations(client: aioredis.Redis) -> dict:
    raw = await client.hgetall(read_model.consumer_stats_key())
    return await sync_to_async(_operations_released)(read_model.decode_consumer_stats(raw))


def _operations_released(stats: dict) -> dict:
    """The figures, the pooled connection given back at once: an open stream keeps none."""
    try:
        return operations(stats)
    finally:
        connection.close()
