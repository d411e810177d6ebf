"""The live stream under load and abuse: real Redis, PostgreSQL and an ASGI server process."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
from collections.abc import Coroutine
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from django.db import connections

from bench.common import established_connections, resident_bytes
from bench.sse_client import Event, SseStream
from counts import services
from dashboard import live, read_model
from infra.redis import redis_client
from scripts.service_tools import free_ports, is_listening
from tests.support.waiting import wait_for

pytestmark = pytest.mark.stack  # Redis: the stream's hub reads the read model's stream

T = TypeVar("T")
# These tests are about the stream, not who may see it (tests/dashboard/test_access.py).
PUBLIC = {"DASHBOARD_PUBLIC": "true"}


def announce(seq: int, pad: int = 0) -> str:
    """Append a stream entry numbered `seq` (padded to `pad` bytes) as the consumer would."""
    changes = [{"id": "seq", "seq": seq, "pad": "x" * pad}]
    return redis_client().xadd(read_model.stream_key(), {"changes": json.dumps(changes)}).decode()


def sequence_number(data: str) -> int:
    return json.loads(data)["changes"][0]["seq"]


async def connect(url: str, path: str = "/stream/", **options) -> SseStream:
    address = urlsplit(url)
    stream = await SseStream.open(address.hostname, address.port, path, **options)
    assert stream.status == 200, stream.status
    return stream


async def open_stream(url: str, **options) -> SseStream:
    """A stream from now on, once live: its first `operations` event came, so from there
    on it misses no entry."""
    stream = await connect(url, **options)
    assert await stream.next_event("operations")
    return stream


def run(scenario: Coroutine[None, None, T], timeout: float = 60) -> T:
    return asyncio.run(asyncio.wait_for(scenario, timeout))


async def read_until(stream: SseStream, last_seq: int) -> tuple[list[int], bool]:
    """Sequence numbers of the refreshes up to `last_seq`; True if a `reset` came first."""
    seen = []
    async for event in stream.events():
        if event.event == "reset":
            return seen, True
        if event.event == "refresh":
            seen.append(sequence_number(event.data))
            if seen[-1] == last_seq:
                return seen, False
    raise AssertionError(f"the stream ended without a reset after {seen[-3:]}")


@pytest.mark.django_db(transaction=True)
def test_a_paused_stream_gets_a_reset_rather_than_skipping_trimmed_entries(app_stack):
    """Issue 15, item 10: a viewer stalls, the stream is trimmed past it, the viewer reads on."""
    _, url = app_stack("web", **PUBLIC)

    async def scenario() -> tuple[list[int], bool]:
        stream = await open_stream(url, receive_buffer=4096)
        announce(0)
        assert sequence_number((await stream.next_event("refresh")).data) == 0
        # The viewer stops reading; far more than the socket buffers hold is announced...
        for seq in range(1, 401):
            announce(seq, pad=32_000)
        # ... and trimmed away before it reads on.
        redis_client().xtrim(read_model.stream_key(), maxlen=1, approximate=False)
        for seq in range(401, 404):
            announce(seq)
        try:
            return await read_until(stream, 403)
        finally:
            stream.close()

    seen, reset = run(scenario())
    assert seen == list(range(1, len(seen) + 1)), f"a gap without a reset: {_gaps([0, *seen])}"
    assert reset or seen[-1] == 403


def _gaps(seen: list[int]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in itertools.pairwise(seen) if b != a + 1]


@pytest.mark.django_db(transaction=True)
def test_a_hundred_streams_hold_no_database_connection_and_all_get_a_write(app_stack, pipeline):
    web, url = app_stack("web", **PUBLIC)
    count = services.count_create(name="seen by all", value=1)
    pipeline.publish_pending()
    pipeline.consume_once()
    before = {port: established_connections(web.process.pid, port) for port in (5432, 6379)}

    async def scenario() -> tuple[dict[int, int], list[Event | None]]:
        streams = await asyncio.gather(*(open_stream(url) for _ in range(100)))
        opened = {port: established_connections(web.process.pid, port) for port in (5432, 6379)}
        await asyncio.to_thread(write_and_consume)
        try:
            return opened, await asyncio.gather(*(s.next_event("refresh") for s in streams))
        finally:
            for stream in streams:
                stream.close()

    def write_and_consume() -> None:
        services.count_increment(count_id=count.id, delta=41)
        pipeline.publish_pending()
        pipeline.consume_once()
        connections.close_all()  # this thread's

    opened, refreshes = run(scenario())
    assert opened[5432] == before[5432], "open streams took database connections"
    assert opened[6379] - before[6379] <= live.REDIS_CONNECTIONS

    # The last stream gone, the hub stops and lets its Redis connections go (the figures
    # are read through the process's shared client, which keeps its one).
    def hub_connections_closed() -> bool:
        return established_connections(web.process.pid, 6379) <= before[6379] + 1

    wait_for(hub_connections_closed, 10, "the hub's Redis connections to close")
    changes = [json.loads(event.data)["changes"] for event in refreshes]
    assert all(c[0]["id"] == str(count.id) and c[0]["value"] == "42" for c in changes)
    assert len({event.id for event in refreshes}) == 1


@pytest.mark.django_db(transaction=True)
def test_a_viewer_that_stops_reading_is_cut_off_with_reset_and_memory_stays_bounded(app_stack):
    budget, entry, flood = 256 * 1024, 8 * 1024, 128 * 2**20
    web, url = app_stack("web", DASHBOARD_STREAM_BUFFER_BYTES=str(budget), **PUBLIC)

    def announce_flood(first: int) -> int:
        """Announce `flood` bytes in entries of `entry` bytes; Redis keeps about 1,000."""
        pipe, seq = redis_client().pipeline(transaction=False), first
        for seq in range(first, first + flood // entry):
            changes = json.dumps([{"id": "seq", "seq": seq, "pad": "x" * entry}])
            pipe.xadd(read_model.stream_key(), {"changes": changes}, maxlen=1000)
            if seq % 500 == 0:
                pipe.execute()
        pipe.execute()
        return seq

    async def scenario() -> tuple[int, list[int], bool, bool]:
        stalled = await open_stream(url, receive_buffer=4096)
        announce(0)
        assert sequence_number((await stalled.next_event("refresh")).data) == 0
        resident = resident_bytes(web.process.pid)
        last = await asyncio.to_thread(announce_flood, 1)
        # The server still serves: a new viewer gets the next entry.
        fresh = await open_stream(url)
        announce(last + 1)
        served = sequence_number((await fresh.next_event("refresh")).data) == last + 1
        growth = resident_bytes(web.process.pid) - resident
        seen, reset = await read_until(stalled, last + 1)
        ended = await stalled.next_event("refresh", "reset", "operations") is None
        fresh.close()
        stalled.close()
        return growth, seen, reset and ended, served

    growth, seen, cut_off, served = run(scenario())
    assert cut_off, "the stalled viewer was not cut off with a reset"
    assert seen == list(range(1, len(seen) + 1)), f"a gap before the reset: {_gaps([0, *seen])}"
    assert growth < flood / 2, f"the web grew by {growth / 2**20:.0f} MiB"
    assert served


@pytest.mark.django_db(transaction=True)
def test_viewers_resuming_with_last_event_id_while_writes_go_on_miss_nothing(app_stack):
    _, url = app_stack("web", **PUBLIC)
    writes, viewers = 300, 20
    first_id = announce(0)

    async def viewer() -> list[int]:
        """Reads, drops the connection every 25 refreshes, resumes with Last-Event-ID."""
        seen, last_id = [], first_id
        while not seen or seen[-1] < writes - 1:
            stream = await connect(url, headers={"Last-Event-ID": last_id})
            async for event in stream.events():
                if event.event == "refresh":
                    seen.append(sequence_number(event.data))
                    last_id = event.id
                    if seen[-1] == writes - 1 or len(seen) % 25 == 0:
                        break
            stream.close()
        return seen

    def write_steadily() -> None:
        for seq in range(1, writes):
            announce(seq)
            time.sleep(0.005)

    async def scenario() -> list[list[int]]:
        reading = asyncio.gather(*(viewer() for _ in range(viewers)))
        await asyncio.to_thread(write_steadily)
        return await reading

    for seen in run(scenario()):
        assert seen == list(range(1, writes)), f"gaps {_gaps([0, *seen])} or repeats"


@pytest.mark.django_db(transaction=True)
def test_a_last_event_id_the_stream_never_issued_gets_a_reset(app_stack):
    """An id past the stream's newest (forged, or from another Redis) would hold back every
    refresh until the stream reached it: the viewer must reload instead."""
    _, url = app_stack("web", **PUBLIC)
    newest = live.parse_id(announce(0))

    async def first_change() -> str:
        stream = await connect(url, headers={"Last-Event-ID": f"{newest[0] + 10**9}-0"})
        try:
            announce(1)
            return (await stream.next_event("refresh", "reset")).event
        finally:
            stream.close()

    assert run(first_change(), timeout=20) == "reset"


@pytest.mark.django_db(transaction=True)
def test_a_stream_opened_while_redis_is_down_ends_cleanly_and_the_next_one_is_live(
    app_stack, private_redis
):
    """The browser retries a stream that ends; the server says why in one line, without
    an error of the app, and serves the next one once Redis is back."""
    web, url = app_stack("web", redis=private_redis.url(15), **PUBLIC)
    private_redis.stop()

    async def events_of_one_stream() -> list[Event]:
        stream = await connect(url)
        try:
            return [event async for event in stream.events()]
        finally:
            stream.close()

    assert run(events_of_one_stream(), timeout=30) == []
    wait_for(
        lambda: "live stream: Redis failed, ending a stream: ConnectionError" in web.log(),
        10,
        "the warning",
    )
    assert "Traceback" not in web.log()

    private_redis.start()

    async def reopened() -> None:
        (await open_stream(url)).close()

    run(reopened(), timeout=30)


@pytest.mark.django_db(transaction=True)
def test_open_streams_end_when_the_server_stops_gracefully(app_processes, test_database_url):
    """As the Procfile serves: several workers, open streams closed 2 s after SIGTERM."""
    (port,) = free_ports(1)
    argv = ("--port", str(port), "--workers", "2", "--timeout-graceful-shutdown", "2")
    web = app_processes.spawn("web", *argv, database_url=test_database_url, **PUBLIC)
    wait_for(lambda: is_listening("127.0.0.1", port), 60, "the web server")
    url = f"http://127.0.0.1:{port}"

    async def scenario() -> tuple[list[Event | None], float]:
        streams = await asyncio.gather(*(open_stream(url) for _ in range(20)))
        web.process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        ends = await asyncio.gather(*(s.next_event("refresh", "reset") for s in streams))
        return ends, time.monotonic() - stopping

    ends, seconds = run(scenario(), timeout=30)
    assert ends == [None] * 20  # each stream ended
    assert seconds < 2 + 2, f"the streams ended {seconds:.1f} s after SIGTERM"  # + a margin
    assert web.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal


@pytest.mark.django_db(transaction=True)
def test_the_operations_figures_come_from_the_consumer_with_the_relay_backlog(app_stack):
    services.count_create(name="not relayed")  # one pending outbox row
    _, url = app_stack("web", **PUBLIC)
    app_stack("consume", "--metrics-port=0")

    async def scenario() -> dict:
        stream = await connect(url)
        async for event in stream.events():
            figures = json.loads(event.data) if event.event == "operations" else {}
            if figures.get("relay_backlog") == 1:
                stream.close()
                return figures
        raise AssertionError("the stream ended")

    figures = run(scenario())
    assert figures["consumer_seen_s_ago"] is not None
    assert figures["relay_oldest_age_s"] >= 0
