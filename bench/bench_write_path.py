"""Write path: increments/s through the service (UPDATE + outbox row) vs the bare UPDATE.

Both sides run the same `UPDATE ... RETURNING` in a transaction of its own; the service also
builds the event and inserts its outbox row (and wakes the relay after the commit). Rounds
alternate the two sides so drift on a shared machine hits both; the figures are the medians
of the rounds. Measured with one writer, then with several writers on their own connections
and their own counts (no lock waits), where PostgreSQL's group commit shares WAL flushes.
Target: the outbox costs at most 25% of the bare write's throughput (ratio >= 0.75).
"""

from __future__ import annotations

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


def main() -> None:
    setup_bench()
    from django.db import connection, transaction

    from counts import services
    from counts.models import Count
    from outbox.models import OutboxMessage

    def bare_update(count_id: str) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(services.ADD_SQL, {"delta": 1, "count_id": count_id})
            cursor.fetchone()

    def service_increment(count_id: str) -> None:
        services.count_increment(count_id=count_id, delta=1)

    OutboxMessage.objects.all().delete()
    Count.objects.all().delete()
    with connection.cursor() as cursor:  # what earlier runs left must not weigh on a side
        for model in (OutboxMessage, Count):
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    count_ids = [str(services.count_create(name=f"bench-{i}").id) for i in range(COUNTS)]
    sides = {"bare": bare_update, "outbox": service_increment}
    for name, writers in (("write_path", 1), ("write_path_concurrent", WRITERS)):
        report(name, writers, compare_writes(sides, count_ids, writers, ROUNDS, SECONDS_PER_SIDE))


if __name__ == "__main__":
    main()
