"""End-to-end freshness: from a write's commit to (a) its cache key gone, (b) an SSE client.

Real processes: `manage.py relay`, `manage.py consume` and uvicorn serving the dashboard.
This process commits increments at a steady RATE/s (the commit time is taken in an
on_commit hook) over COUNTS counts whose cache entries are filled first; two listener
processes note when each change arrives:

(a) cache key gone: the consumer deletes the keys and appends the batch's changes to the
    dashboard stream in one MULTI/EXEC, so a client blocked on XREAD wakes up at the moment
    the keys are gone (checked at the end: every written count's key is gone).
(b) dashboard event at an SSE client: an HTTP client reading the page's /stream/ from uvicorn.

A change names the newest version of its count in its batch; every commit of that count up to
that version is fresh from then on, so each commit's latency is the first change that covers it.
Targets: p99 < 50 ms and p50 < 10 ms write-to-dashboard.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Queue
from multiprocessing.synchronize import Event

import httpx
import redis
from common import ROOT, emit, log, setup_bench, summary

RATE = 500
WRITERS = 4
SECONDS = 10
COUNTS = 50
SETTLE_SECONDS = 30

Seen = list[tuple[float, str, int]]  # (arrival time, count id, version)


def start(env: dict[str, str], *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


# The two listeners run in processes of their own, so that waiting for this process's GIL
# never delays the moment an arrival is noted.


def watch_stream(redis_url: str, key: str, last_id: str, stop: Event, out: Queue) -> None:
    """(a) Block on the dashboard stream in Redis; note when each change lands."""
    client, seen = redis.Redis.from_url(redis_url), []
    while not stop.is_set():
        for _, entries in client.xread({key: last_id}, block=200) or []:
            now = time.time()
            for entry_id, fields in entries:
                last_id = entry_id
                changes = json.loads(fields.get(b"changes", b"[]"))
                seen.extend((now, c["id"], c["version"]) for c in changes)
    out.put(("redis", seen))


def watch_sse(url: str, connected: Event, stop: Event, out: Queue) -> None:
    """(b) Read the dashboard's Server-Sent Events like a browser does."""
    seen, refresh = [], False
    with httpx.stream("GET", url, timeout=None) as response:
        connected.set()
        for line in response.iter_lines():  # an "operations" event comes every 2 s at least
            if stop.is_set():
                break
            if line.startswith("event: "):
                refresh = line == "event: refresh"
            elif line.startswith("data: ") and refresh:
                now = time.time()
                seen.extend((now, c["id"], c["version"]) for c in json.loads(line[6:])["changes"])
    out.put(("sse", seen))


def write_steadily(count_ids: list[str]) -> tuple[dict[tuple[str, int], float], float]:
    """Increments at RATE/s for SECONDS (fewer if the machine cannot keep up); commit times.

    WRITERS threads, each on its own connection and its own share of the counts, write
    RATE/WRITERS per second each, so one commit's round trips never hold up the next.
    """
    started = time.perf_counter()
    with ThreadPoolExecutor(WRITERS) as pool:
        shares = [count_ids[i::WRITERS] for i in range(WRITERS)]
        committed = {k: v for part in pool.map(_write_share, shares) for k, v in part.items()}
    achieved = len(committed) / (time.perf_counter() - started)
    log(f"{len(committed)} writes at {achieved:.0f}/s")
    return committed, achieved


def _write_share(count_ids: list[str]) -> dict[tuple[str, int], float]:
    from django.db import connection, transaction

    from counts import services

    committed: dict[tuple[str, int], float] = {}
    rate = RATE / WRITERS
    interval, started = 1 / rate, time.perf_counter()
    try:
        for n in range(int(rate * SECONDS)):
            if time.perf_counter() - started > SECONDS:
                break
            time.sleep(max(0.0, started + n * interval - time.perf_counter()))
            with transaction.atomic():
                stamp: dict[str, float] = {}
                transaction.on_commit(lambda stamp=stamp: stamp.setdefault("t", time.time()))
                count = services.count_increment(count_id=count_ids[n % len(count_ids)])
            committed[(str(count.id), count.version)] = stamp["t"]
    finally:
        connection.close()
    return committed


def settled(committed: dict[tuple[str, int], float]) -> bool:
    """True once the read model shows every count at its last written version."""
    from dashboard import read_model

    shown = read_model.snapshot().counts
    return all(shown[count_id]["version"] >= version for count_id, version in committed)


def latencies(committed: dict[tuple[str, int], float], seen: Iterable) -> list[float]:
    """Per commit: ms until the first change of its count with a version at least its own."""
    arrivals: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for at, count_id, version in sorted(seen):
        arrivals[count_id].append((at, version))
    samples = []
    for (count_id, version), at_commit in committed.items():
        covered = next((at for at, v in arrivals[count_id] if v >= version), None)
        if covered is not None:
            samples.append((covered - at_commit) * 1000)
    return samples


def main() -> None:
    bench = setup_bench()
    from django.conf import settings

    from counts import cache, services
    from counts.models import Count
    from dashboard import read_model
    from scripts.service_tools import free_ports, is_listening

    count_ids = [
        str(services.count_create(name=f"fresh-{bench.run_id}-{n}").id) for n in range(COUNTS)
    ]
    (port,) = free_ports(1)
    processes = [
        start(bench.env, "manage.py", "relay", "--metrics-port", "0"),
        start(bench.env, "manage.py", "consume", "--metrics-port", "0"),
        start(
            {**bench.env, "DASHBOARD_PUBLIC": "true"},
            *("-m", "uvicorn", "config.asgi:application", "--port", str(port)),
        ),
    ]
    context = multiprocessing.get_context("spawn")
    stop, connected, results = context.Event(), context.Event(), context.Queue()
    try:
        deadline = time.monotonic() + 60
        while len(read_model.snapshot().counts) < COUNTS or not is_listening("127.0.0.1", port):
            assert time.monotonic() < deadline, "the pipeline did not come up"
            time.sleep(0.1)
        for count_id in count_ids:
            key, generation = cache.count_key(count_id), cache.count_generation_key(count_id)
            cache.read_through(key, generation, lambda: 0)
        last_id = read_model.snapshot().stream_id
        url = f"http://127.0.0.1:{port}/stream/?last_id={last_id}"
        key = read_model.stream_key()
        listeners = [
            context.Process(
                target=watch_stream, args=(settings.REDIS_URL, key, last_id, stop, results)
            ),
            context.Process(target=watch_sse, args=(url, connected, stop, results)),
        ]
        for listener in listeners:
            listener.start()
        assert connected.wait(30), "no SSE connection"
        time.sleep(0.5)

        committed, achieved = write_steadily(count_ids)
        deadline = time.monotonic() + SETTLE_SECONDS
        while not settled(committed):
            assert time.monotonic() < deadline, "the consumer did not catch up"
            time.sleep(0.1)
        time.sleep(2.5)  # the SSE listener notices `stop` at the next event
        stop.set()
        seen = dict(results.get(timeout=30) for _ in listeners)
        stale = [c for c in count_ids if cache.redis_client().exists(cache.count_key(c))]
        assert not stale, f"cache keys still present: {stale[:3]}"
    finally:
        stop.set()
        for process in processes:
            process.terminate()
            process.wait(30)
        Count.objects.filter(id__in=count_ids).delete()

    for name, channel, what in (
        ("freshness_cache_invalidated", "redis", "commit -> cache key gone"),
        ("freshness_sse_client", "sse", "commit -> dashboard event at an SSE client"),
    ):
        samples = latencies(committed, seen[channel])
        figures = summary(samples, (50, 90, 99))
        log(f"{what}: {figures} ms over {len(samples)}/{len(committed)} writes")
        emit(
            name,
            {**figures, "writes_per_s": round(achieved), "fresh": len(samples)},
            {**{k: "ms" for k in figures}, "writes_per_s": "writes/s", "fresh": "writes"},
            f"target at {RATE} writes/s: p99 < 50 ms, p50 < 10 ms ({what})",
            figures["p99"] / 50,
        )


if __name__ == "__main__":
    main()
