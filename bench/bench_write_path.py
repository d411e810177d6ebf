"""Write path: increments/s through the service (UPDATE + outbox row) vs the bare UPDATE.

Both sides run the same `UPDATE ... RETURNING` in a transaction of its own; the service also
builds the event and inserts its outbox row. Rounds alternate the two sides so drift on a
shared machine hits both; the figures are the medians of the rounds. Target: the outbox
costs at most 25% of the bare write's throughput (ratio >= 0.75).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from common import emit, log, median, setup_bench

COUNTS = 50
ROUNDS = 10
SECONDS_PER_SIDE = 1.5


def rate(write: Callable[[str], object], count_ids: list[str], seconds: float) -> float:
    """Writes per second that `write` sustains for `seconds`, round-robin over the counts."""
    done = 0
    ids = itertools.cycle(count_ids)
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):  # check the clock less often than we write
            write(next(ids))
        done += 20
    return done / (time.perf_counter() - started)


def main() -> None:
    setup_bench()
    from django.db import connection, transaction

    from counts import services
    from counts.models import Count
    from outbox.models import OutboxMessage

    def bare_update(count_id: str) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(services._INCREMENT_SQL, [1, count_id])
            cursor.fetchone()

    def service_increment(count_id: str) -> None:
        services.count_increment(count_id=count_id, delta=1)

    OutboxMessage.objects.all().delete()
    Count.objects.all().delete()
    count_ids = [str(services.count_create(name=f"bench-{i}").id) for i in range(COUNTS)]
    sides = {"bare": bare_update, "outbox": service_increment}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for round_no in range(ROUNDS):
        order = list(sides) if round_no % 2 == 0 else list(reversed(sides))
        for name in order:
            rates[name].append(rate(sides[name], count_ids, SECONDS_PER_SIDE))
        log(f"round {round_no + 1}: " + ", ".join(f"{n} {r[-1]:.0f}/s" for n, r in rates.items()))

    with_outbox, bare = median(rates["outbox"]), median(rates["bare"])
    ratio = with_outbox / bare
    emit(
        "write_path",
        figures={
            "with_outbox_per_s": round(with_outbox),
            "bare_update_per_s": round(bare),
            "outbox_cost_pct": round((1 - ratio) * 100, 1),
            "rounds": ROUNDS,
        },
        units={
            "with_outbox_per_s": "increments/s (service: UPDATE + outbox row, one tx each)",
            "bare_update_per_s": "increments/s (same UPDATE, one tx each)",
            "outbox_cost_pct": "% of bare throughput",
            "rounds": f"alternating rounds of {SECONDS_PER_SIDE:g} s per side, medians",
        },
        baseline="the same UPDATE ... RETURNING without the outbox row (target ratio >= 0.75)",
        ratio=ratio,
    )


if __name__ == "__main__":
    main()
