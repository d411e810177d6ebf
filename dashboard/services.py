"""Repairs of the dashboard read model against the database (run periodically by Celery)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from counts.events import now_ms
from counts.models import Count
from dashboard import read_model
from dashboard.read_model import GONE_FOREVER, Update

# Redis runs one script at a time: a rebuild of 100,000 counts must not stall it for seconds.
REPAIRS_PER_SCRIPT = 1000


def _differs(entry: dict | None, count: Count) -> bool:
    shown = None if entry is None else (entry["name"], entry["value"], entry["version"])
    return shown != (count.name, count.value, count.version)


def _tombstones_contradicted(count_ids: set[str], stamp: int) -> dict[str, Update]:
    """Restorations of counts that have a tombstone yet still exist once it was read: a
    deletion commits before its event is published, so no committed deletion made such
    a tombstone (a `deleted` event at a bogus version did). Each lifts only the tombstone
    read here, so one a newer event wrote meanwhile stays."""
    tombstones = read_model.tombstones(count_ids)
    restored = {}
    for count in Count.objects.filter(pk__in=list(tombstones)).only("name", "value", "version"):
        count_id = str(count.id)
        restored[count_id] = Update(
            count_id,
            stamp,
            count.version,
            str(count.value),
            count.version,
            count.name,
            lift=tombstones[count_id],
        )
    return restored


def reconcile_read_model(grace: timedelta = timedelta(seconds=30)) -> dict[str, list[str]]:
    """Make the read model equal the database; return the repaired ids by kind of repair.

    Counts changed within `grace` are left to the consumer, which is normally just behind.
    The read model is read *before* the database: a count it shows was committed before,
    so one the database then lacks is really deleted, and is tombstoned for good; and a
    tombstone of a count the database still has is lifted (`_tombstones_contradicted`).
    Repairs go through the same version-checked script as events, so a repair can never
    undo a newer event that the consumer applies meanwhile; they are not events, so they
    change figures and open pages but add nothing to the feed. Drifted indexes and totals
    (or ones that predate them) are rebuilt first.
    """
    _, shown = read_model.rebuild_indexes_reading_counts()
    settled = timezone.now() - grace
    stamp = now_ms()
    updates: dict[str, Update] = {}
    existing: set[str] = set()
    for count in Count.objects.only("id", "name", "value", "version", "updated_at").iterator():
        count_id = str(count.id)
        existing.add(count_id)
        if count.updated_at <= settled and _differs(shown.get(count_id), count):
            updates[count_id] = Update(
                count_id, stamp, count.version, str(count.value), count.version, count.name
            )
    for count_id in shown.keys() - existing:
        updates[count_id] = Update(count_id, stamp, dv=GONE_FOREVER)
    updates |= _tombstones_contradicted(existing, stamp)
    changes = []
    pending = list(updates.items())
    for start in range(0, len(pending), REPAIRS_PER_SCRIPT):
        chunk = dict(pending[start : start + REPAIRS_PER_SCRIPT])
        changes += read_model.apply_updates(chunk, repair=True)
    repairs = {"added": [], "fixed": [], "removed": []}
    kind = {"created": "added", "deleted": "removed"}
    for change in changes:
        repairs[kind.get(change["action"], "fixed")].append(change["id"])
    return repairs
