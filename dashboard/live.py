"""The live stream's hub: one Redis reader per process fans out to every open stream.

While at least one `/stream/` response is open in a process (one asyncio event loop), its
hub runs two tasks on one shared Redis connection pool:

- a reader blocks on `XREAD` of the dashboard stream and formats each entry once as an SSE
  frame (`refresh`, or `reset` after a rebuild) whose id is the entry id;
- every OPERATIONS_EVERY_SECONDS it reads the figures the consumer publishes (relay
  backlog, consumer lag, events/s) and the read model's totals, top counts and newest
  rates, and formats one `operations` frame.

Each frame goes, as the same bytes object, to the queue of every viewer (open stream). A
viewer holds no Redis or database connection; it waits on its queue. A viewer resuming with
Last-Event-ID first reads what it missed through the pool, then its queue; a viewer skips
ids up to the last one it sent, so nothing is lost or repeated; one resuming from an id the
stream never issued gets `reset`. A viewer whose queue grows past
DASHBOARD_STREAM_BUFFER_BYTES (it does not read) is cut off: its queue is emptied, it
leaves the hub, and it gets `reset` as soon as it reads again. When the stream was trimmed
past what the hub or a resuming viewer has read, they get `reset` too: the page reloads.
A stream opened while Redis is unavailable ends at once; the browser retries a second later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Coroutine
from typing import NamedTuple

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError, ResponseError

from dashboard import read_model
from dashboard.selectors import operations
from infra.kafka import backoff
from infra.logs import RepeatedWarning

logger = logging.getLogger(__name__)

OPERATIONS_EVERY_SECONDS = 2.0
READ_COUNT = 500  # entries per XREAD of the hub
RESUME_PAGE = 1_000  # entries per read of what a resuming viewer missed
BLOCK_MS = 5_000
# The reader, the operations task and resuming viewers share these; more resuming
# viewers at once wait for a free connection (up to POOL_TIMEOUT_SECONDS).
REDIS_CONNECTIONS = 8
POOL_TIMEOUT_SECONDS = 10

StreamId = tuple[int, int]


class Frame(NamedTuple):
    id: StreamId | None  # None: not a stream entry (operations, a cut-off's reset)
    data: bytes


RETRY = b"retry: 1000\n\n"  # browsers reconnect after 1 s
RESET = Frame(None, b"event: reset\ndata: {}\n\n")


class Unresumable(Exception):
    """A viewer cannot go on from its id: entries after it were trimmed before it read them,
    or the stream never issued it."""


def parse_id(stream_id: str | bytes) -> StreamId:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def entry_frame(entry_id: bytes, fields: dict[bytes, bytes]) -> Frame:
    if b"reset" in fields:
        body = RESET.data
    else:
        changes = fields.get(b"changes", b"[]")
        body = b'event: refresh\ndata: {"changes":' + changes + b"}\n\n"
    return Frame(parse_id(entry_id), b"id: " + entry_id + b"\n" + body)


def trimmed_after(info: dict, position: StreamId) -> bool:
    """True if entries after `position` may be gone (from XINFO STREAM's answer).

    Trimming removes the oldest entries, so that is so when the stream has lost entries
    and `position` is older than the oldest one left. (Redis 7.0 counts trimmed entries
    in `entries-added` but not in `max-deleted-entry-id`.)
    """
    if info["entries-added"] == info["length"]:
        return False
    first = info["first-entry"]  # None when every entry is gone
    return position < parse_id(first[0] if first else info["last-generated-id"])


class Viewer:
    """One open stream: the frames waiting for it, bounded in bytes.

    Its queue holds lists of frames: all the entries of one read of the hub go in as one
    item, and all that waits goes out as one write, so a burst costs each viewer one
    wake-up instead of one per entry.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.position: StreamId = (0, 0)  # the last entry it was sent
        self._queue: asyncio.Queue[list[Frame]] = asyncio.Queue()
        self._queued_bytes = 0

    def offer(self, frames: list[Frame], size: int) -> bool:
        """Queue frames of `size` bytes; False (nothing queued) if they do not fit."""
        if self._queued_bytes + size > self.budget:
            return False
        self._queued_bytes += size
        self._queue.put_nowait(frames)
        return True

    def cut_off(self) -> None:
        """Drop what is queued; the next thing it sends is its last: `reset`."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued_bytes = 0
        self._queue.put_nowait([RESET])

    async def frames(self) -> AsyncIterator[bytes]:
        """What is queued, as it comes and in one piece, without the entries it was
        already sent. Ends after a `reset` of its own."""
        while True:
            ready = [await self._queue.get()]
            while not self._queue.empty():
                ready.append(self._queue.get_nowait())
            data = [frame.data for frames in ready for frame in frames if self._is_new(frame)]
            if data:
                yield data[0] if len(data) == 1 else b"".join(data)
            if ready[-1] == [RESET]:
                return

    def _is_new(self, frame: Frame) -> bool:
        self._queued_bytes -= len(frame.data)
        if frame.id is None:
            return True
        if frame.id <= self.position:
            return False
        self.position = frame.id
        return True


class Hub:
    """The stream's fan-out in one process (see the module's docstring)."""

    def __init__(self) -> None:
        self.viewers: set[Viewer] = set()
        self.position: StreamId = (0, 0)  # the last entry fanned out
        self._redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL,
                max_connections=REDIS_CONNECTIONS,
                timeout=POOL_TIMEOUT_SECONDS,
                # An unreachable host fails a stream's start as fast as a refusing one.
                socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            )
        )
        self._ending = RepeatedWarning(logger)  # streams ended for want of Redis
        self._reading = RepeatedWarning(logger)  # the reader's failed reads
        self._started: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._operations: Frame | None = None
        self._stopping: asyncio.Task | None = None

    async def stream(self, last_id: str) -> AsyncIterator[bytes]:
        """One viewer's SSE body: from `last_id` ("$": from now on), then live, until it
        is cut off or the client goes away. Without Redis it ends (the browser retries)."""
        viewer = Viewer(settings.DASHBOARD_STREAM_BUFFER_BYTES)
        self.viewers.add(viewer)  # from here on it misses no fan-out
        try:
            yield RETRY
            try:
                async for data in self._catch_up(viewer, last_id):
                    yield data
            except Unresumable:
                yield RESET.data
                return
            except RedisError as exc:  # down, or no pooled connection free in time
                self._ending.warning(
                    "live stream: Redis failed, ending a stream: %s: %s", type(exc).__name__, exc
                )
                return
            async for data in viewer.frames():
                yield data
        finally:
            self._drop(viewer)

    async def _catch_up(self, viewer: Viewer, last_id: str) -> AsyncIterator[bytes]:
        """The hub started, the newest operations frame and what the viewer missed up to
        the hub's position; from there on its queue has the rest."""
        await asyncio.shield(self._start())
        live_from = self.position  # what came after this is (or will be) in its queue
        if self._operations is not None:
            yield self._operations.data
        viewer.position = live_from if last_id == "$" else parse_id(last_id)
        if viewer.position > live_from and not await self._issued(viewer.position):
            raise Unresumable  # its page came from another stream: reload it
        async for frame in self._entries_between(viewer.position, live_from):
            viewer.position = frame.id
            yield frame.data

    # --- lifecycle -------------------------------------------------------------------

    def _start(self) -> asyncio.Task:
        """The task that finds the newest entry and starts the hub (once, for all)."""
        started = self._started
        if started is None or (started.done() and (started.cancelled() or started.exception())):
            self._started = asyncio.create_task(self._begin())
        return self._started

    async def _begin(self) -> None:
        newest = await self._redis.xrevrange(read_model.stream_key(), count=1)
        self.position = parse_id(newest[0][0]) if newest else (0, 0)
        self._operations = None
        self._tasks = [self._run(self._read()), self._run(self._report())]

    def _run(self, work: Coroutine[None, None, None]) -> asyncio.Task:
        task = asyncio.create_task(work)
        task.add_done_callback(self._crashed)
        return task

    def _crashed(self, task: asyncio.Task) -> None:
        """A hub task failed (a bug): cut every viewer off; the next one starts afresh."""
        if _succeeded(task):
            return
        logger.error("live stream: the hub failed", exc_info=task.exception())
        for viewer in list(self.viewers):
            self._cut_off(viewer)

    def _drop(self, viewer: Viewer) -> None:
        """The viewer leaves; the last one to leave stops the hub."""
        self.viewers.discard(viewer)
        if self.viewers or self._started is None:
            return
        stopping = [self._started, *self._tasks]
        for task in stopping:
            task.cancel()
        self._started, self._tasks = None, []
        self._stopping = asyncio.create_task(self._close_idle_connections(stopping))

    async def _close_idle_connections(self, stopping: list[asyncio.Task]) -> None:
        await asyncio.gather(*stopping, return_exceptions=True)
        if not self.viewers:  # none came back meanwhile
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    # --- fan-out ---------------------------------------------------------------------

    def _fan_out(self, frames: list[Frame]) -> None:
        size = sum(len(frame.data) for frame in frames)
        for viewer in list(self.viewers):
            if not viewer.offer(frames, size):
                logger.info("a live stream fell %d bytes behind: cut off", viewer.budget)
                self._cut_off(viewer)

    def _cut_off(self, viewer: Viewer) -> None:
        viewer.cut_off()
        self._drop(viewer)

    async def _read(self) -> None:
        """Forever: the next entries after the hub's position, to every viewer."""
        key = read_model.stream_key()
        failures = 0
        while True:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xread({key: _format_id(self.position)}, count=READ_COUNT, block=BLOCK_MS)
                    pipe.xinfo_stream(key)  # executes as soon as the XREAD returns
                    found, info = await pipe.execute(raise_on_error=False)
                if isinstance(found, Exception):
                    raise found
            except RedisError as exc:
                failures += 1
                delay = backoff(failures, base=0.05, cap=2.0)
                self._reading.warning("live stream: cannot read, retrying in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if not isinstance(info, ResponseError) and trimmed_after(info, self.position):
                self._trimmed(info)
                continue
            for _, entries in found or []:
                frames = [entry_frame(entry_id, fields) for entry_id, fields in entries]
                self.position = frames[-1].id
                self._fan_out(frames)

    def _trimmed(self, info: dict) -> None:
        """The hub fell behind the stream's trimming: every viewer must reload."""
        logger.warning("live stream: entries were trimmed before they were read; reset")
        self.position = parse_id(info["last-generated-id"])
        for viewer in list(self.viewers):
            self._cut_off(viewer)

    async def _report(self) -> None:
        """Every OPERATIONS_EVERY_SECONDS: the consumer's published figures to every viewer."""
        while True:
            try:
                # A few reads of the read model through the (blocking) shared Redis client,
                # so in a thread; no database read.
                data = json.dumps(await asyncio.to_thread(_current_operations))
            except (RedisError, ValueError) as exc:
                logger.warning("live stream: cannot read the operations figures: %s", exc)
            else:
                self._operations = Frame(None, f"event: operations\ndata: {data}\n\n".encode())
                self._fan_out([self._operations])
            await asyncio.sleep(OPERATIONS_EVERY_SECONDS)

    # --- resuming --------------------------------------------------------------------

    async def _issued(self, stream_id: StreamId) -> bool:
        """Whether the stream has issued `stream_id`: an id past this hub's position may have
        been read by another process's hub first, or never exist (forged, or from a Redis
        since emptied)."""
        try:
            info = await self._redis.xinfo_stream(read_model.stream_key())
        except ResponseError:  # no stream
            return False
        return stream_id <= parse_id(info["last-generated-id"])

    async def _entries_between(self, after: StreamId, until: StreamId) -> AsyncIterator[Frame]:
        """The entries after `after` up to `until`, page by page; raises Unresumable if some of
        them are gone (each page and its check are read in one MULTI)."""
        key = read_model.stream_key()
        while after < until:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xinfo_stream(key)
                pipe.xrange(key, f"({_format_id(after)}", _format_id(until), count=RESUME_PAGE)
                info, entries = await pipe.execute(raise_on_error=False)
            if isinstance(info, ResponseError):  # no stream: nothing was missed
                return
            if trimmed_after(info, after):
                raise Unresumable
            for entry_id, fields in entries:
                frame = entry_frame(entry_id, fields)
                after = frame.id
                yield frame
            if len(entries) < RESUME_PAGE:
                return


def _current_operations() -> dict:
    return operations(read_model.consumer_stats())


def _succeeded(task: asyncio.Task) -> bool:
    """Cancelled (the hub stopped) or ended without an exception."""
    return task.cancelled() or task.exception() is None


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def current_hub() -> Hub:
    """This process's hub (one per event loop: the ASGI server runs one per process)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]
