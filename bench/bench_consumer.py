"""Consumer throughput: a `manage.py consume` process drains a pre-filled topic.

EVENTS count-value-updated events over KEYS counts are produced up front (the bytes the
outbox would hold). The consumer process applies them with everything it does in
production: parsing and checks, the read model, cache invalidation, the live stream and
offset commits. Its rate is timed from its first to its last processed event (read from its
Prometheus endpoint, so Django's start-up and the group join are not counted), beside a
bare confluent-kafka consumer that only reads and JSON-decodes the same messages.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid

import httpx
from common import ROOT, emit, log, setup_bench

EVENTS = 100_000
KEYS = 2_000
_PROCESSED = re.compile(r"^countstream_consumer_events_total\{[^}]*\} (\S+)$", re.MULTILINE)


def prefill(run_id: str) -> list:
    from confluent_kafka import Producer

    from counts.events import value_updated
    from counts.models import Count
    from infra.kafka import client_config
    from outbox.services import outbox_message

    counts = Count.objects.bulk_create(Count(name=f"bench-{run_id}-{n}") for n in range(KEYS))
    producer = Producer(client_config(**{"linger.ms": 20, "partitioner": "murmur2_random"}))
    for n in range(EVENTS):
        count, step = counts[n % KEYS], n // KEYS + 1
        count.value, count.version = step, step + 1
        # The bytes and headers the outbox would hold for this write, as the relay sends them.
        row = outbox_message(value_updated(count, old_value=step - 1))
        headers = list(row.headers.items())
        producer.produce(row.topic, key=row.key, value=bytes(row.value), headers=headers)
        if n % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    log(f"pre-filled {EVENTS} events over {KEYS} counts")
    return counts


def processed(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(found) for found in _PROCESSED.findall(text))


def consumer_rate(env: dict[str, str]) -> float:
    """Events/s of a real consumer process, from its first to its last processed event."""
    from scripts.service_tools import free_ports

    (port,) = free_ports(1)
    command = [sys.executable, "manage.py", "consume", "--metrics-port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        while (done := processed(port)) == 0:
            assert process.poll() is None, "the consumer exited"
            time.sleep(0.01)
        started, first = time.perf_counter(), done
        while (done := processed(port)) < EVENTS:
            assert process.poll() is None, "the consumer exited"
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(30)
    return (done - first) / seconds


def raw_rate() -> float:
    """A bare consumer in this process: fetch and json.loads, no effects, no commits."""
    import json

    from confluent_kafka import Consumer

    from counts.events import COUNT_VALUE_UPDATED
    from infra.kafka import client_config
    from infra.topics import topic_name

    consumer = Consumer(
        client_config(
            **{"group.id": f"raw-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic_name(COUNT_VALUE_UPDATED)])
    seen, started = 0, None
    while seen < EVENTS:
        batch = consumer.consume(1000, timeout=1)
        started = started or (time.perf_counter() if batch else None)
        for message in batch:
            if not message.error():
                json.loads(message.value())
                seen += 1
    seconds = time.perf_counter() - started
    consumer.close()
    return seen / seconds


def main() -> None:
    bench = setup_bench()
    from counts.models import Count

    counts = prefill(bench.run_id)
    try:
        rate = consumer_rate(bench.env)
        raw = raw_rate()
    finally:
        Count.objects.filter(id__in=[c.id for c in counts]).delete()
    log(f"consumer {rate:.0f} events/s, bare consumer {raw:.0f} events/s")
    emit(
        "consumer_throughput",
        {"events_per_s": round(rate), "raw_events_per_s": round(raw), "events": EVENTS},
        {"events_per_s": "events/s", "raw_events_per_s": "events/s", "events": "events"},
        f"bare confluent-kafka consumer (fetch + json.loads) on the same {EVENTS} events",
        rate / raw,
    )


if __name__ == "__main__":
    main()
