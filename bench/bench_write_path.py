"""Write path: increments/s through the service (UPDATE + outbox row) vs the bare UPDATE.

Both sides run the same `UPDATE ... RETURNING` in a transaction of its own; the service also
builds the event and inserts its outbox row (and wakes the relay after the commit). Rounds
alternate the two sides so drift on a shared machine hits both; the figures are the medians
of the rounds. Measured with one writer, then with several writers on their own connections
and their own counts (no lock waits), where PostgreSQL's group commit shares WAL flushes.
Target: the outbox costs at most 25% of the bare write's throughput (ratio >= 0.75).

A third side measures the Idempotency-Key (counts.idempotency.run_once, as the API calls it
for a keyed POST, service layer, no HTTP): the same increment with a fresh key per write,
whose claim INSERT, savepoint and answer UPDATE share its transaction. Its result line
compares it with the unkeyed increment of the same rounds.
"""

from __future__ import annotations

import hashlib
import uuid

from common import compare_writes, emit, setup_bench

COUNTS = 48
ROUNDS = 8
SECONDS_PER_SIDE = 1.5
WRITERS = 4


def report(name: str, writers: int, medians: dict[str, float]) -> None:
    with_outbox, bare = medians["outbox"], medians["bare"]
    ratio = with_outbox / bare
    emit(
        name,
        figures={
            "with_outbox_per_s": round(with_outbox),
            "bare_update_per_s": round(bare),
            "outbox_cost_pct": round((1 - ratio) * 100, 1),
            "writers": writers,
        },
        units={
            "with_outbox_per_s": "increments/s (service: UPDATE + outbox row, one tx each)",
            "bare_update_per_s": "increments/s (same UPDATE, one tx each)",
            "outbox_cost_pct": "% of bare throughput",
            "writers": f"threads with own connections; medians of {ROUNDS} alternating "
            f"rounds of {SECONDS_PER_SIDE:g} s per side",
        },
        baseline="the same UPDATE ... RETURNING without the outbox row (target ratio >= 0.75)",
        ratio=ratio,
    )


def report_key_cost(name: str, writers: int, medians: dict[str, float]) -> None:
    keyed, unkeyed = medians["keyed"], medians["outbox"]
    emit(
        name,
        figures={
            "with_key_per_s": round(keyed),
            "without_key_per_s": round(unkeyed),
            "key_cost_pct": round((1 - keyed / unkeyed) * 100, 1),
            "writers": writers,
        },
        units={
            "with_key_per_s": "increments/s (run_once: key claim + increment + answer, one tx)",
            "without_key_per_s": "increments/s (the service alone, one tx each)",
            "key_cost_pct": "% of the unkeyed increment's throughput",
            "writers": f"threads with own connections; medians of {ROUNDS} alternating "
            f"rounds of {SECONDS_PER_SIDE:g} s per side (service layer, no HTTP)",
        },
        baseline="the same increment without an Idempotency-Key",
        ratio=keyed / unkeyed,
    )


def main() -> None:
    setup_bench()
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from counts import idempotency, services
    from counts.models import Count, IdempotencyKey
    from outbox.models import OutboxMessage

    def bare_update(count_id: str) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(services.ADD_SQL, {"delta": 1, "count_id": count_id})
            cursor.fetchone()

    def service_increment(count_id: str) -> None:
        services.count_increment(count_id=count_id, delta=1)

    def answer(count: Count) -> idempotency.Answer:
        """What the API stores: the count's fields as its JSON answer carries them."""
        body = {f: getattr(count, f) for f in ("name", "description", "value", "version")}
        stamps = {f: getattr(count, f).isoformat() for f in ("created_at", "updated_at")}
        headers = {"ETag": f'"{count.version}"'}
        return idempotency.Answer(200, {"id": str(count.id), **body, **stamps}, headers)

    def keyed_increment(count_id: str) -> None:
        key = str(uuid.uuid4())  # every write a first request, as a client's new write is
        fingerprint = hashlib.sha256(f"POST {count_id}\n\n{{}}".encode()).hexdigest()
        idempotency.run_once(
            user_id=user_id,
            key=key,
            fingerprint=fingerprint,
            write=lambda: answer(services.count_increment(count_id=count_id, delta=1)),
        )

    OutboxMessage.objects.all().delete()
    Count.objects.all().delete()
    IdempotencyKey.objects.all().delete()
    with connection.cursor() as cursor:  # what earlier runs left must not weigh on a side
        for model in (OutboxMessage, Count, IdempotencyKey):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    user_id = get_user_model().objects.get_or_create(username="bench")[0].pk
    count_ids = [str(services.count_create(name=f"bench-{i}").id) for i in range(COUNTS)]
    sides = {"bare": bare_update, "outbox": service_increment, "keyed": keyed_increment}
    for name, writers in (("write_path", 1), ("write_path_concurrent", WRITERS)):
        medians = compare_writes(sides, count_ids, writers, ROUNDS, SECONDS_PER_SIDE)
        report(name, writers, medians)
        report_key_cost(f"{name}_idempotency_key", writers, medians)


if __name__ == "__main__":
    main()
