"""Store faults: Redis stopped and PostgreSQL restarted under load, with the real processes.

Each store is a private instance (the shared ones are never touched); Kafka is the shared
broker with this test's own topics. Each scenario prints its figures as a JSON line.
"""

from __future__ import annotations

import json
import signal
import statistics
import time

import httpx
import psycopg
import pytest
import redis
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from counts import cache, services
from outbox.models import OutboxMessage
from tests.support.load import SteadyLoad
from tests.support.pipeline import database_truth, read_model_state
from tests.support.processes import CONSUMER_ARGS, RELAY_ARGS, api_client, run_manage
from tests.support.relay import delivery_audit
from tests.support.waiting import reporting, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.stack]


def timed_get(api: httpx.Client, url: str, latencies: list[float]) -> httpx.Response:
    started = time.perf_counter()
    response = api.get(url).raise_for_status()
    latencies.append((time.perf_counter() - started) * 1000)
    return response


def test_redis_stopped_reads_still_answer_the_consumer_waits_and_no_stale_entry_survives(
    pipeline,
    app_processes,
    test_database_url,
    persistent_redis,
):
    start = app_processes.bound(
        database_url=test_database_url, redis=persistent_redis.url(0), **pipeline.env
    )
    store = redis.Redis.from_url(persistent_redis.url(0))
    counts = [services.count_create(name=f"cached-{n}", value=n) for n in range(10)]
    user = get_user_model().objects.create_user("load", password="pw")
    _, base_url = start("web")
    start("relay", *RELAY_ARGS)
    consumer = start("consume", *CONSUMER_ARGS)
    api = api_client(base_url, Token.objects.create(user=user).key)
    # The consumer's start-up reconcile can show the truth before the creation events are
    # consumed; those would then invalidate entries warmed too early.
    wait_for(lambda: read_model_state(store) == database_truth(), 60, "the first events")
    published = OutboxMessage.objects.exclude(state=OutboxMessage.State.PENDING)
    wait_for(lambda: published.count() == OutboxMessage.objects.count(), 60, "the relay")
    wait_for(lambda: pipeline.lag() == 0, 30, "the first events consumed")
    for count in counts:  # warm every entry: these are what could go stale
        api.get(f"/api/counts/{count.id}/").raise_for_status()
    cached_keys = [cache.count_key(str(count.id)) for count in counts]
    assert store.exists(*cached_keys) == len(counts)

    latencies: list[float] = []

    def read(n: int) -> None:
        timed_get(api, f"/api/counts/{counts[n % len(counts)].id}/", latencies)

    def write(n: int) -> None:
        url = f"/api/counts/{counts[n % len(counts)].id}/increment/"
        api.post(url, json={"delta": 1}).raise_for_status()

    with reporting("redis-stopped") as measured:
        persistent_redis.stop()
        with SteadyLoad(write, per_second=20) as writes, SteadyLoad(read, 20) as reads:
            wait_for(lambda: "cannot apply a batch" in consumer.log(), 30, "the consumer to wait")
            time.sleep(3)
        lag_while_down = pipeline.lag()
        measured.update(
            writes_during_outage=writes.done,
            failed_writes=len(writes.errors),
            reads_during_outage=reads.done,
            failed_reads=len(reads.errors),
            read_p50_ms=round(statistics.median(latencies), 1) if latencies else None,
            read_max_ms=round(max(latencies), 1) if latencies else None,
            uncommitted_events_while_down=lag_while_down,
        )

        consumer.process.send_signal(signal.SIGSTOP)  # nothing touches the cache while we look
        persistent_redis.start()  # with its data: the entries cached before the outage are back
        restored = store.exists(*cached_keys)
        consumer.process.send_signal(signal.SIGCONT)
        back = time.monotonic()
        measured["cache_entries_back_after_restart"] = restored
        wait_for(lambda: read_model_state(store) == database_truth(), 60, "the held-back events")
        measured["read_model_caught_up_after_restart_s"] = round(time.monotonic() - back, 2)
        wait_for(lambda: pipeline.lag() == 0, 30, "the consumer to commit")

        truth = {count_id: value for count_id, (_, value) in database_truth().items()}
        served = {key: api.get(f"/api/counts/{key}/").json()["value"] for key in truth}
        measured["stale_after_restart"] = sum(served[key] != value for key, value in truth.items())
        assert (writes.errors, reads.errors) == ([], [])
        assert restored == len(counts)  # every entry came back stale: the fault really hit
        assert lag_while_down > 0  # nothing was committed, so nothing was skipped
        assert served == truth


def manage(database_url: str, *argv: str, **env: str) -> str:
    """A management command against another database than the test's own."""
    result = run_manage(database_url, *argv, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


SEED = """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from counts.services import count_create
user = get_user_model().objects.create_user("load")
ids = [str(count_create(name=f"pg-{n}").id) for n in range(10)]
print(json.dumps({"token": Token.objects.create(user=user).key, "counts": ids}))
"""


class Database:
    """Reads of the private database, each on a fresh connection (it is restarted)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.url, connect_timeout=3) as conn:
            return conn.execute(sql).fetchall()

    def truth(self) -> dict[str, tuple[str, int]]:
        rows = self.rows("SELECT id::text, name, value FROM counts_count")
        return {count_id: (name, value) for count_id, name, value in rows}

    def pending(self) -> int:
        return self.rows("SELECT count(*) FROM outbox_outboxmessage WHERE state = 'pending'")[0][0]

    def outbox(self) -> list[OutboxMessage]:
        rows = self.rows("SELECT id, event_id, topic, key FROM outbox_outboxmessage ORDER BY id")
        return [OutboxMessage(id=i, event_id=e, topic=t, key=k) for i, e, t, k in rows]


def test_postgres_restarted_under_load_web_relay_and_consumer_reconnect_by_themselves(
    pipeline,
    app_processes,
    private_postgres,
):
    url = private_postgres.create_database("countstream_faults")
    manage(url, "migrate", "--no-input", "-v", "0")
    # The outbox rows get their topic names (this test's prefix) when they are written.
    seeded = json.loads(manage(url, "shell", "-c", SEED, **pipeline.env).splitlines()[-1])
    db = Database(url)
    start = app_processes.bound(database_url=url, **pipeline.env)
    _, base_url = start("web")
    relay = start("relay", *RELAY_ARGS)
    consumer = start("consume", *CONSUMER_ARGS)
    api = api_client(base_url, seeded["token"])
    wait_for(lambda: read_model_state() == db.truth(), 60, "the first events")
    acked_at: list[float] = []
    refused_at: list[float] = []  # when a 503 came back

    def write(n: int) -> None:
        count_id = seeded["counts"][n % len(seeded["counts"])]
        response = api.post(f"/api/counts/{count_id}/increment/", json={"delta": 1})
        if response.status_code == 503:
            refused_at.append(time.monotonic())
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        acked_at.append(time.monotonic())

    with reporting("postgres-restarted") as measured:
        with SteadyLoad(write, per_second=20) as writes:
            wait_for(lambda: len(acked_at) >= 10, 60, "writes to go through")
            private_postgres.stop("immediate")  # a crash: recovery runs on start
            down = time.monotonic()
            time.sleep(3)  # the outage
            # The web must say so while it lasts, not only let writes fail somehow.
            wait_for(lambda: refused_at and refused_at[-1] > down, 30, "a 503 while it is down")
            private_postgres.start()
            back = time.monotonic()
            measured["database_down_s"] = round(back - down, 1)
            wait_for(lambda: acked_at[-1] > back, 30, "the web server to reconnect")
            time.sleep(3)  # writes go on after the outage
        measured.update(
            api_writes_acknowledged=writes.done,
            api_writes_failed=len(writes.errors),
            refused_with_503_while_down=sum(down <= t <= back for t in refused_at),
            failures=sorted(set(writes.errors)),
            web_writing_again_after_s=round(min(t for t in acked_at if t > back) - back, 2),
        )
        wait_for(lambda: db.pending() == 0, 60, "the relay to reconnect and publish")
        measured["relay_drained_after_s"] = round(time.monotonic() - back, 2)
        wait_for(lambda: read_model_state() == db.truth(), 60, "the consumer to catch up")
        measured.update(
            consumer_caught_up_after_s=round(time.monotonic() - back, 2),
            relay_reconnects=relay.log().count("connected to PostgreSQL") - 1,
        )

        total = sum(value for _, value in db.truth().values())
        rows = db.outbox()
        figures = delivery_audit(rows)
        measured.update(figures)
        assert set(writes.errors) <= {"RuntimeError: HTTP 503"}  # an outage, said so: no 500
        # Every acknowledged write is there; a write cut off by the crash may or may not be.
        assert writes.done <= total <= writes.done + len(writes.errors)
        assert figures["lost"] == 0
        assert consumer.alive and relay.alive
