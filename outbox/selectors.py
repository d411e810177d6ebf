"""Reads of the outbox for reports: the relay's log line, web's /metrics, the dashboard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from outbox.models import OutboxMessage

_TABLE = OutboxMessage._meta.db_table

# The oldest pending row is the first by id of some lane: one range scan of the partial
# (lane, id) index per lane, instead of reading every pending row of a large backlog.
# clock_timestamp(), not now(): the age at the moment of reading, also inside a transaction.
BACKLOG_SQL = f"""
    SELECT (SELECT count(*) FROM {_TABLE} WHERE state = 'pending'),
           (SELECT extract(epoch FROM clock_timestamp() - min(first.created_at))
              FROM generate_series(0, %(lanes)s - 1) AS lanes(lane)
             CROSS JOIN LATERAL (
                    SELECT created_at FROM {_TABLE}
                     WHERE state = 'pending' AND lane = lanes.lane
                     ORDER BY id LIMIT 1
                  ) AS first),
           (SELECT count(*) FROM {_TABLE} WHERE state = 'parked')
"""


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_age_s: float  # 0 when nothing is pending
    parked: int

    @classmethod
    def from_row(cls, row: tuple) -> Backlog:
        pending, oldest, parked = row
        return cls(pending, max(float(oldest or 0), 0.0), parked)


def outbox_backlog() -> Backlog:
    """Rows waiting for the relay, the age of the oldest, and rows parked for an operator."""
    with connection.cursor() as cursor:
        cursor.execute(BACKLOG_SQL, {"lanes": settings.OUTBOX_LANES})
        return Backlog.from_row(cursor.fetchone())


def published_keys(event_ids: Iterable[str]) -> set[str]:
    """The keys of the outbox rows with these event ids: events that really were written."""
    rows = OutboxMessage.objects.filter(event_id__in=list(event_ids))
    return set(rows.values_list("key", flat=True))
