"""The live stream at scale: 1,000 open streams, each API write reaching every one of them.

Real processes: the web served as the Procfile's `web:` line serves it (its port swapped for
a free one), `manage.py relay` and `manage.py consume`. This process holds STREAMS open
`/stream/` connections on raw asyncio sockets (bench/sse_client.py) and, from a thread,
makes WRITES increments through the REST API, one every WRITE_EVERY_SECONDS. For each write:
the time from its API response to the moment the last of the streams received the change.

The streams log in as a browser does (one staff user's session cookie); each one's access
check borrows a pooled connection at open. Reported: the database's connection count (all,
and the web's own, from /proc) before the streams open, after a warm-up of concurrent
opens, and once they are open (an open stream must hold none); and the resident memory of
the web's processes.
Target (issue 14): p99 API response -> last client <= 200 ms, connection count unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from common import (
    ROOT,
    emit,
    established_connections,
    log,
    median,
    resident_bytes,
    session_pids,
    setup_bench,
    summary,
)
from sse_client import SseStream

STREAMS = 1_000
WRITES = 20
WRITE_EVERY_SECONDS = 0.25
OPEN_AT_ONCE = 100
PROCFILE_PORT = "8000"
TARGET_MS = 200


def raise_open_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def start_web(env: dict[str, str], port: int) -> subprocess.Popen:
    """The Procfile's web command, as `make run` starts it, on `port` (its own session, so
    every worker can be found and stopped with it)."""
    line = next(
        line.split(":", 1)[1].strip()
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    command = re.sub(rf"\b{PROCFILE_PORT}\b", str(port), line.removeprefix("exec "))
    log(f"web: {command}")
    path = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=ROOT,
        env={**env, "PATH": path},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def start(env: dict[str, str], *argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )


@dataclass(frozen=True)
class WebFigures:
    """What the web holds at one moment: memory, and connections to PostgreSQL (all of
    the database's, and the web's own)."""

    rss_mib: float
    database_connections: int | None  # None: PostgreSQL refused one more (at its limit)
    web_database_connections: int

    @classmethod
    def now(cls, session: int, database_url: str) -> WebFigures:
        pids = session_pids(session)
        port = int(psycopg.conninfo.conninfo_to_dict(database_url).get("port") or 5432)
        query = """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid()"""
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                (total,) = conn.execute(query).fetchone()
        except psycopg.OperationalError as exc:
            log(f"cannot count the database's connections: {exc}")
            total = None
        return cls(
            round(sum(resident_bytes(pid) for pid in pids) / 2**20, 1),
            total,
            sum(established_connections(pid, port) for pid in pids),
        )


class Viewers:
    """STREAMS open streams; when each saw each version of the count."""

    def __init__(self, port: int, count_id: str, cookie: str) -> None:
        self.port, self.count_id, self.headers = port, count_id, {"Cookie": cookie}
        self.seen: list[list[tuple[int, float]]] = []  # per stream: (version, arrival)
        self.live = 0
        self.failed: list[str] = []

    async def open_all(self) -> list[asyncio.Task]:
        tasks = []
        for first in range(0, STREAMS, OPEN_AT_ONCE):
            batch = [self._open() for _ in range(first, min(first + OPEN_AT_ONCE, STREAMS))]
            for stream in await asyncio.gather(*batch):
                if stream is not None:
                    tasks.append(asyncio.create_task(self._follow(stream)))
        return tasks

    async def _open(self) -> SseStream | None:
        try:
            stream = await SseStream.open("127.0.0.1", self.port, "/stream/", self.headers)
            if stream.status == 200 and await stream.next_event("operations"):
                self.live += 1
                return stream
            self.failed.append(f"status {stream.status}, no operations event")
            stream.close()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.failed.append(type(exc).__name__)
        return None

    async def warm_up(self) -> None:
        """Open and close OPEN_AT_ONCE streams twice: every worker's database pool grows to
        what concurrent login checks need, as on a server that has been serving a while."""
        for _ in range(2):
            streams = await asyncio.gather(*(self._open() for _ in range(OPEN_AT_ONCE)))
            for stream in streams:
                if stream is not None:
                    stream.close()
        self.live, self.failed = 0, []

    async def _follow(self, stream: SseStream) -> None:
        seen: list[tuple[int, float]] = []
        self.seen.append(seen)
        try:
            async for event in stream.events():
                if event.event != "refresh":
                    continue
                now = time.time()
                for change in json.loads(event.data)["changes"]:
                    if change["id"] == self.count_id:
                        seen.append((change["version"], now))
        finally:
            stream.close()


def write_through_api(base_url: str, token: str, count_id: str, answered: list) -> None:
    """WRITES increments, one every WRITE_EVERY_SECONDS; (version, time of the response)."""
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as api:
        for _ in range(WRITES):
            response = api.post(f"/api/counts/{count_id}/increment/", json={"delta": 1})
            at = time.time()
            if response.status_code == 200:
                answered.append((response.json()["version"], at))
            else:
                log(f"API answered {response.status_code}: {response.text[:200]}")
            time.sleep(WRITE_EVERY_SECONDS)


def latencies(viewers: Viewers, answered: list) -> tuple[list[float], list[float], int]:
    """Per write: ms from its API response to the last and to the first stream that saw it
    (a change with its version or a later one); and how many (write, stream) deliveries
    were missing."""
    samples, first, missing = [], [], 0
    for version, at in answered:
        firsts = [
            next((t for seen, t in stream if seen >= version), None) for stream in viewers.seen
        ]
        arrived = [t for t in firsts if t is not None]
        missing += len(firsts) - len(arrived)
        if arrived:
            samples.append((max(arrived) - at) * 1000)
            first.append((min(arrived) - at) * 1000)
    return samples, first, missing


async def hold_streams(
    bench, port: int, count_id: str, token: str, cookie: str, web: subprocess.Popen
) -> tuple[Viewers, list, list[WebFigures]]:
    """Open the streams, write through the API; the web's figures before the streams
    opened, once they are open, and after the writes."""
    viewers = Viewers(port, count_id, cookie)
    await viewers.warm_up()
    await asyncio.sleep(1)  # the warm-up's streams gone
    figures = [WebFigures.now(web.pid, bench.database_url)]
    opened_at = time.monotonic()
    tasks = await viewers.open_all()
    log(f"{viewers.live} streams live in {time.monotonic() - opened_at:.1f}s")
    await asyncio.sleep(2.5)  # an operations round on every stream
    figures.append(WebFigures.now(web.pid, bench.database_url))
    answered: list = []
    base_url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(write_through_api, base_url, token, count_id, answered)
    await asyncio.sleep(2)  # the last write's deliveries
    figures.append(WebFigures.now(web.pid, bench.database_url))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return viewers, answered, figures


def main() -> None:
    raise_open_file_limit(STREAMS * 2 + 1024)
    bench = setup_bench()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from rest_framework.authtoken.models import Token

    from counts import services
    from dashboard import read_model
    from scripts.service_tools import free_ports, is_listening

    # Staff may view the dashboard; the streams share one session, as a browser's tabs do.
    user = get_user_model().objects.create_user(f"stream-bench-{bench.run_id}", is_staff=True)
    token = Token.objects.create(user=user).key
    browser = Client()
    browser.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    count = services.count_create(name=f"stream-bench-{bench.run_id}")
    connection.close()
    (port,) = free_ports(1)
    env = {**bench.env, "RELAY_METRICS_PORT": "0", "CONSUMER_METRICS_PORT": "0"}
    relay = start(env, "relay", "--metrics-port", "0")
    consumer = start(env, "consume", "--metrics-port", "0")
    web = start_web(env, port)
    try:
        deadline = time.monotonic() + 60
        while str(count.id) not in read_model.snapshot().counts or not is_listening(
            "127.0.0.1", port
        ):
            assert time.monotonic() < deadline, "the pipeline did not come up"
            time.sleep(0.2)
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        viewers, answered, (idle, streaming, written) = asyncio.run(
            hold_streams(bench, port, str(count.id), token, cookie, web)
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(web.pid, signal.SIGTERM)  # the web's session: its master and workers
        for process in (relay, consumer):
            process.terminate()
        for process in (web, relay, consumer):
            process.wait(30)
        user.delete()

    samples, first, missing = latencies(viewers, answered)
    figures = summary(samples, (50, 99)) if samples else dict.fromkeys(("p50", "p99", "max"))
    figures["first_stream_p50"] = round(median(first), 3) if first else None
    log(
        f"{viewers.live}/{STREAMS} streams, {len(answered)}/{WRITES} writes answered, "
        f"{missing} deliveries missing; API response -> last stream {figures} ms "
        "(first_stream_p50: to the first one); "
        f"database connections {idle.database_connections} -> "
        f"{streaming.database_connections} (the web's own {idle.web_database_connections} -> "
        f"{streaming.web_database_connections}); web RSS {idle.rss_mib} -> {streaming.rss_mib} "
        f"-> {written.rss_mib} MiB after the writes; failures {viewers.failed[:5]}"
    )
    emit(
        "stream_fanout",
        {
            **figures,
            "streams": viewers.live,
            "writes_answered": len(answered),
            "deliveries_missing": missing,
            "db_connections_before": idle.database_connections,
            "db_connections_after": streaming.database_connections,
            "web_db_connections_before": idle.web_database_connections,
            "web_db_connections_after": streaming.web_database_connections,
            "web_rss_idle_mib": idle.rss_mib,
            "web_rss_streams_mib": streaming.rss_mib,
            "web_rss_after_writes_mib": written.rss_mib,
        },
        {
            **{k: "ms" for k in figures},
            "streams": "streams",
            "writes_answered": "writes",
            "deliveries_missing": "deliveries",
            "db_connections_before": "connections",
            "db_connections_after": "connections",
            "web_db_connections_before": "connections",
            "web_db_connections_after": "connections",
            "web_rss_idle_mib": "MiB",
            "web_rss_streams_mib": "MiB",
            "web_rss_after_writes_mib": "MiB",
        },
        f"target with {STREAMS} streams: p99 API response -> last stream <= {TARGET_MS} ms, "
        "database connections unchanged when the streams open",
        figures["p99"] / TARGET_MS if samples else None,  # no write answered: no ratio
    )


if __name__ == "__main__":
    main()
