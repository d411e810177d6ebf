"""The web under load, served as `make run` serves it (the Procfile's web command, several
worker processes): PostgreSQL connections stay within the pools' bound, and a request that
cannot get a connection in time is answered 503 with Retry-After instead of hanging."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from bench.common import session_connections
from scripts.procfile import web_command
from scripts.service_tools import free_ports, is_listening
from tests.support.paths import ROOT
from tests.support.processes import api_client, process_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.stack]

CLIENTS = 40
LOAD_SECONDS = 4


@dataclass(frozen=True)
class Web:
    url: str
    session: int  # the session of the server and its workers

    def database_connections(self, port: int) -> int:
        """The TCP connections the server's processes hold to `port`, read from /proc: only
        the web's, whatever else (this test's own pool) connects meanwhile."""
        return session_connections(self.session, port)


@pytest.fixture
def start_web(test_database_url: str, tmp_path: Path) -> Iterator[Callable[..., Web]]:
    """`start_web(**env)`: the Procfile's web command on a free port."""
    started: list[subprocess.Popen] = []

    def start(**env: str) -> Web:
        (port,) = free_ports(1)
        with open(tmp_path / f"web-{port}.log", "wb") as log:
            started.append(
                subprocess.Popen(
                    ["/bin/sh", "-c", web_command(port)],
                    cwd=ROOT,
                    env={
                        **process_env(test_database_url, DJANGO_DEBUG="false", **env),
                        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                    },
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # one process group: the server and its workers
                )
            )
        wait_for(lambda: is_listening("127.0.0.1", port), 60, f"web on {port}")
        return Web(f"http://127.0.0.1:{port}", started[-1].pid)

    yield start
    for process in started:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture
def token(transactional_db) -> str:
    user = get_user_model().objects.create_user("load", password="load-pass")
    return Token.objects.create(user=user).key


def create_count(client: httpx.Client, name: str) -> str:
    response = client.post("/api/counts/", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_forty_api_clients_get_no_5xx_and_the_connections_stay_within_the_bound(
    start_web, token, test_database_url
):
    workers, pool_size = 2, 3
    web = start_web(
        WEB_CONCURRENCY=str(workers),
        DATABASE_POOL_MIN_SIZE="1",
        DATABASE_POOL_MAX_SIZE=str(pool_size),
    )
    url, database_port = web.url, urlsplit(test_database_url).port or 5432
    with api_client(url, token) as client:
        count_ids = [create_count(client, f"load-{n}") for n in range(8)]
    web_connections: list[int] = []
    stop = threading.Event()

    def sample_connections() -> None:
        while not stop.is_set():
            web_connections.append(web.database_connections(database_port))
            time.sleep(0.05)

    def api_user(n: int) -> list[tuple[str, int]]:
        count_id, answers = count_ids[n % len(count_ids)], []
        with api_client(url, token) as client:
            deadline = time.monotonic() + LOAD_SECONDS
            while time.monotonic() < deadline:
                increment = client.post(f"/api/counts/{count_id}/increment/")
                read = client.get(f"/api/counts/{count_id}/")
                answers += [("increment", increment.status_code), ("read", read.status_code)]
        return answers

    sampler = threading.Thread(target=sample_connections)
    sampler.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = Counter(
                answer for user in pool.map(api_user, range(CLIENTS)) for answer in user
            )
    finally:
        stop.set()
        sampler.join()

    assert {status for _, status in answers} == {200}, answers
    # Each worker: its pool, and the plain connection that wakes the relay after a commit.
    assert 0 < max(web_connections) <= workers * (pool_size + 1), web_connections
    with psycopg.connect(test_database_url) as reader:
        (total,) = reader.execute("SELECT sum(value) FROM counts_count").fetchone()
    assert total == answers["increment", 200]  # every answered increment counted, once


def test_a_request_that_gets_no_pooled_connection_in_time_is_a_503_with_retry_after(
    start_web, token, test_database_url
):
    url = start_web(
        WEB_CONCURRENCY="1",
        DATABASE_POOL_MIN_SIZE="1",
        DATABASE_POOL_MAX_SIZE="1",
        DATABASE_POOL_TIMEOUT="0.5",
        DASHBOARD_PUBLIC="true",  # the page below, without logging in
    ).url
    with api_client(url, token) as client:
        locked_id, other_id = create_count(client, "locked"), create_count(client, "other")
    with psycopg.connect(test_database_url) as holder, api_client(url, token) as client:
        # The pool's only connection waits on this row lock inside an increment.
        holder.execute("SELECT 1 FROM counts_count WHERE id = %s FOR UPDATE", [locked_id])
        with ThreadPoolExecutor(1) as background:
            held = background.submit(client.post, f"/api/counts/{locked_id}/increment/")
            wait_for(
                lambda: holder.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchone(),
                30,
                "the increment to wait on the row lock",
            )
            with httpx.Client(base_url=url, timeout=10) as other:  # a hang fails here
                api = other.post(
                    f"/api/counts/{other_id}/increment/",
                    headers={"Authorization": f"Token {token}"},
                )
                page = other.get("/")
            holder.rollback()
            assert held.result().status_code == 200
    assert api.status_code == 503, api.text
    assert api.headers["Retry-After"] == "1"
    assert api.json()["detail"].startswith("The database is busy")
    assert page.status_code == 503, page.text
    assert page.headers["Retry-After"] == "1"
