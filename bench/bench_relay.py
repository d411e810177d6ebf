"""Relay: throughput on a pre-filled backlog, commit-to-ack latency, and the wake-up's cost.

1. relay_throughput: BACKLOG pending rows drained by `Relay(once=True)` in this process,
   beside a bare confluent-kafka producer (same settings, same payloads, same broker)
   sending them, both in each of THROUGHPUT_ROUNDS rounds; medians. Target: ratio >= 0.35.
   `--profile` prints where the relay's time goes (cProfile, top functions) to stderr
   instead of this result.
2. relay_latency: a `manage.py relay` process while this process commits increments at a
   steady RATE/s; latency is the commit (an on_commit hook) to `published_at`, which the
   relay writes right after the batch's last delivery report. Target: p99 < 20 ms.
3. relay_wakeup_write_cost: concurrent increments/s with no NOTIFY, a NOTIFY inside the
   writing transaction, and the NOTIFY after commit that outbox.enqueue uses, while a
   listener plays a relay that is idle whenever a write lands: it announces itself again
   after every NOTIFY, so the writers pay the most a relay can ask of them.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager

import psycopg
from common import ROOT, Write, compare_writes, emit, log, median, setup_bench, summary
from prometheus_client.parser import text_string_to_metric_families

BACKLOG = 200_000
THROUGHPUT_ROUNDS = 3
KEYS = 2_000
RATE = 500
LATENCY_SECONDS = 10
LATENCY_WRITERS = 4
WRITERS = 8
WRITE_COST_SECONDS = 1.5
WRITE_COST_ROUNDS = 6


def load() -> float:
    """The machine's 1-minute load: figures from a busy shared machine need this beside them."""
    return round(os.getloadavg()[0], 2)


def acked_within(metrics_port: int, bucket: str) -> float:
    """Share of deliveries the relay's histogram puts at or under `bucket` seconds."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    counts = {}
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "countstream_relay_delivery_age_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    counts[sample.labels["le"]] = sample.value
    return counts[bucket] / counts["+Inf"]


def prefill(count_ids: list[uuid.UUID]) -> None:
    """BACKLOG count-value-updated events over the counts, built by counts.events and
    outbox.services as a write builds them, and COPYed into the outbox in commit order."""
    from django.db import connection
    from django.utils import timezone

    from counts.events import value_updated
    from counts.models import Count
    from outbox.models import OutboxMessage
    from outbox.services import outbox_message

    counts = [Count(id=count_id) for count_id in count_ids]
    columns = "event_id, topic, key, value, headers, lane, state, created_at, attempts, last_error"
    copy_rows = f"COPY {OutboxMessage._meta.db_table} ({columns}) FROM STDIN"
    now = timezone.now()
    with connection.cursor() as cursor, cursor.copy(copy_rows) as copy:
        for step in range(1, BACKLOG // len(counts) + 1):
            for count in counts:
                count.value, count.version = step, step + 1
                row = outbox_message(value_updated(count, old_value=step - 1))
                fields = (row.event_id, row.topic, row.key, row.value, json.dumps(row.headers))
                copy.write_row((*fields, row.lane, "pending", now, 0, ""))


def bare_producer_rate(payloads: list[tuple]) -> float:
    """The same messages through a bare producer with the relay's settings (so, like the
    relay, it hears only of failed deliveries)."""
    from confluent_kafka import Producer

    from outbox.deliveries import producer_config

    failed = []
    producer = Producer(producer_config(on_delivery=lambda error, _message: failed.append(error)))
    started = time.perf_counter()
    for topic, key, value, headers in payloads:
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    unsent = producer.flush(60)
    elapsed = time.perf_counter() - started
    assert not failed and not unsent, f"bare producer: {len(failed)} failed, {unsent} unsent"
    return len(payloads) / elapsed


def fresh_backlog() -> list[tuple]:
    """Refill the outbox with BACKLOG pending rows; their (topic, key, value, headers)."""
    from django.db import connection

    from outbox.models import OutboxMessage

    OutboxMessage.objects.all().delete()  # what the earlier phases or rounds left
    prefill([uuid.uuid4() for _ in range(KEYS)])
    with connection.cursor() as cursor:  # a clean table with fresh statistics
        cursor.execute(f"VACUUM ANALYZE {OutboxMessage._meta.db_table}")
    rows = OutboxMessage.objects.filter(state="pending").order_by("id")
    return [
        (topic, key, bytes(value), headers)
        for topic, key, value, headers in rows.values_list("topic", "key", "value", "headers")
    ]


def relay_rate(expected: int, profiler: cProfile.Profile | None = None) -> float:
    """Events/s of a `Relay(once=True)` draining the backlog in this process."""
    from outbox.relay import Relay, RelayOptions

    relay = Relay(RelayOptions(once=True))
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    relay.run()
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    assert relay.published_total == expected, relay.published_total
    return relay.published_total / elapsed


def throughput(profile: bool) -> None:
    if profile:  # cProfile slows the relay down: print where the time goes, no figure
        profiler = cProfile.Profile()
        relay_rate(len(fresh_backlog()), profiler)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        log(out.getvalue())
        return
    relay_rates, raw_rates = [], []
    for round_no in range(THROUGHPUT_ROUNDS):  # both sides in every round, side by side
        payloads = fresh_backlog()
        rows = len(payloads)
        raw_rates.append(bare_producer_rate(payloads))
        # A relay process holds no list of every message: kept alive, it would make Python's
        # garbage collector walk 200,000 more objects while the relay runs (in interleaved
        # rounds the ratio was 0.345 with the list kept, 0.364 without).
        del payloads
        relay_rates.append(relay_rate(rows))
        log(
            f"round {round_no + 1}: relay {relay_rates[-1]:.0f}/s vs bare producer "
            f"{raw_rates[-1]:.0f}/s over {rows} rows (load {load()})"
        )
    rate, raw = median(relay_rates), median(raw_rates)
    emit(
        "relay_throughput",
        {
            "relay_events_per_s": round(rate),
            "bare_producer_events_per_s": round(raw),
            "load_avg_1m": load(),
        },
        {
            "relay_events_per_s": f"events/s, median of {THROUGHPUT_ROUNDS} rounds",
            "bare_producer_events_per_s": f"events/s, median of {THROUGHPUT_ROUNDS} rounds",
            "load_avg_1m": "runnable processes (2 cores)",
        },
        f"bare confluent-kafka producer, same {BACKLOG} payloads and settings",
        rate / raw,
    )


@contextmanager
def relay_process(env: dict[str, str], metrics_port: int):
    command = [sys.executable, "manage.py", "relay", "--metrics-port", str(metrics_port)]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**env, "LOG_LEVEL": "INFO"}, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in process.stderr:  # serving once it holds its lanes
            if "lanes " in line:
                break
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield process
    finally:
        process.terminate()
        process.wait(30)


def latency(env: dict[str, str]) -> None:
    from django.db import connection, transaction

    from counts import services
    from outbox.models import OutboxMessage
    from scripts.service_tools import free_ports

    count_ids = [services.count_create(name=f"latency-{n}").id for n in range(64)]
    committed: dict[str, float] = {}

    def write(slot: int, started: float) -> None:
        """Every LATENCY_WRITERS-th write of an open-loop schedule at RATE/s."""
        try:
            for n in range(slot, RATE * LATENCY_SECONDS, LATENCY_WRITERS):
                time.sleep(max(0.0, started + n / RATE - time.perf_counter()))
                with transaction.atomic():
                    stamp = {}
                    transaction.on_commit(lambda stamp=stamp: stamp.setdefault("t", time.time()))
                    count = services.count_increment(count_id=count_ids[n % len(count_ids)])
                committed[f"{count.id}:{count.version}"] = stamp["t"]
        finally:
            connection.close()

    (metrics_port,) = free_ports(1)
    with relay_process(env, metrics_port):
        time.sleep(1)
        started = time.perf_counter()
        writers = [
            threading.Thread(target=write, args=(slot, started)) for slot in range(LATENCY_WRITERS)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        achieved = len(committed) / (time.perf_counter() - started)
        deadline = time.monotonic() + 30
        while OutboxMessage.objects.filter(state="pending").exists():
            assert time.monotonic() < deadline, "relay did not catch up"
            time.sleep(0.05)
        within_20ms = acked_within(metrics_port, "0.02")
    published = OutboxMessage.objects.filter(key__in=[str(c) for c in count_ids]).values_list(
        "key", "headers", "published_at"
    )
    samples = [
        (published_at.timestamp() - committed[f"{key}:{headers['count_version']}"]) * 1000
        for key, headers, published_at in published
        if f"{key}:{headers['count_version']}" in committed
    ]
    figures = summary(samples, (50, 90, 99))
    log(f"{len(samples)} writes at {achieved:.0f}/s: commit -> acked and marked {figures} ms")
    log(f"relay histogram: {within_20ms:.1%} acked within 20 ms of the row's creation")
    emit(
        "relay_latency",
        {
            **figures,
            "acked_within_20ms": round(within_20ms, 4),
            "writes_per_s": round(achieved),
            "load_avg_1m": load(),
        },
        {
            **{name: "ms" for name in figures},
            "acked_within_20ms": "fraction (relay histogram)",
            "writes_per_s": "writes/s",
            "load_avg_1m": "runnable processes (2 cores)",
        },
        "target: p99 commit -> Kafka ack under 20 ms at 500 writes/s",
        None,
    )


@contextmanager
def always_idle_relay(database_url: str):
    """A listener that announces itself idle at once and again after every NOTIFY."""
    from outbox import wakeup

    stopping = threading.Event()

    def serve() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            wakeup.listen(conn)
            while not stopping.is_set():
                wakeup.announce_idle(conn)
                while not stopping.is_set() and not wakeup.wait(conn, 0.1):
                    pass

    thread = threading.Thread(target=serve, name="always-idle-relay")
    thread.start()
    try:
        yield
    finally:
        stopping.set()
        thread.join()


def write_cost(database_url: str) -> None:
    """Increments/s from WRITERS threads, each on its own counts, with each wake-up style."""
    from django.db import connection, transaction

    from counts import services
    from outbox import wakeup

    count_ids = [services.count_create(name=f"cost-{n}").id for n in range(WRITERS * 4)]
    real_notify = wakeup.notify_relays

    def notify_inside() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {wakeup.CHANNEL}")

    def increment(style: str) -> Write:
        """An increment in its own transaction, the relay woken in `style`."""
        notify = real_notify if style == "after_commit" else lambda: None

        def write(count_id: str) -> None:
            wakeup.notify_relays = notify  # the after-commit hook looks it up at each commit
            with transaction.atomic():
                services.count_increment(count_id=count_id)
                if style == "inside":
                    notify_inside()

        return write

    sides = {style: increment(style) for style in ("none", "inside", "after_commit")}
    try:
        with always_idle_relay(database_url):
            rates = compare_writes(sides, count_ids, WRITERS, WRITE_COST_ROUNDS, WRITE_COST_SECONDS)
    finally:
        wakeup.notify_relays = real_notify
    log(f"write path with {WRITERS} writers, medians of {WRITE_COST_ROUNDS} rounds: {rates}")
    emit(
        "relay_wakeup_write_cost",
        {
            **{f"{style}_writes_per_s": round(rate) for style, rate in rates.items()},
            "load_avg_1m": load(),
        },
        {
            **{f"{style}_writes_per_s": "writes/s" for style in rates},
            "load_avg_1m": "runnable processes (2 cores)",
        },
        "increments without any NOTIFY",
        rates["after_commit"] / rates["none"],
    )


def main() -> None:
    bench = setup_bench()
    from counts.models import Count
    from outbox.models import OutboxMessage

    OutboxMessage.objects.all().delete()
    Count.objects.all().delete()
    # Latency first: the throughput run leaves checkpoints and vacuum work behind it. The
    # write-cost rounds leave autovacuum work on the counts table (their sides rotate
    # round by round, so they come last and the throughput run does not pay for them).
    latency(bench.env)
    throughput(profile="--profile" in sys.argv)
    write_cost(bench.database_url)


if __name__ == "__main__":
    main()
