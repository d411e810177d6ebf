"""The only way to change counts. Each service commits the change and its outbox rows together.

Concurrency: every service that changes a count takes the row's lock first (an
`UPDATE ... RETURNING` or `SELECT ... FOR UPDATE`) and enqueues its events while holding
it. Two writers of one count are therefore serialised by PostgreSQL, and the outbox ids
of one count grow in commit order, so the old_value -> new_value chain never breaks.

Optimistic concurrency: update, delete and set take `if_version`, the versions the caller
last saw (the API's If-Match). It is compared under the row's lock, so no other write can
come between the check and the change; a mismatch raises StaleVersion and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, transaction

from counts import events
from counts.models import INT64_MAX, INT64_MIN, Count, parse_count_id
from counts.selectors import count_get
from outbox.services import enqueue, write_with_event


class Conflict(ValidationError):
    """Valid input that the current state refuses: a taken name, a sum past 64 bits."""


class StaleVersion(Exception):
    """The count's version is not one the caller expected: it changed since they read it."""

    def __init__(self, version: int) -> None:
        super().__init__(f"The count is at version {version}.")
        self.version = version


def _check_int64(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError({field: "Must be an integer."})
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValidationError({field: f"Must be between {INT64_MIN} and {INT64_MAX}."})


def _check_text(field: str, value: str) -> None:
    if not isinstance(value, str):
        raise ValidationError({field: "Must be a string."})


def _check_name(name: str) -> str:
    _check_text("name", name)
    name = name.strip()
    if not name:
        raise ValidationError({"name": "This field may not be blank."})
    if len(name) > (limit := Count._meta.get_field("name").max_length):
        raise ValidationError({"name": f"At most {limit} characters."})
    return name


def _locked(count_id: uuid.UUID | str, if_version: Collection[int] | None = None) -> Count:
    """The count, its row locked until the transaction ends (call inside atomic); with
    `if_version`, only if its version is one of those (else StaleVersion)."""
    count = Count.objects.select_for_update().get(pk=parse_count_id(count_id))
    if if_version is not None and count.version not in if_version:
        raise StaleVersion(count.version)
    return count


def _name_taken() -> Conflict:
    return Conflict({"name": "A count with this name already exists."})


def count_create(*, name: str, description: str = "", value: int = 0) -> Count:
    name = _check_name(name)
    _check_text("description", description)
    _check_int64("value", value)
    try:
        with transaction.atomic():
            count = Count.objects.create(name=name, description=description, value=value)
            created = [events.info_updated(count, "created")]
            if value != 0:
                created.append(events.value_updated(count, old_value=0))
            enqueue(*created)
    except IntegrityError as exc:
        raise _name_taken() from exc
    return count


def count_update_info(
    *,
    count_id: uuid.UUID | str,
    name: str | None = None,
    description: str | None = None,
    if_version: Collection[int] | None = None,
) -> Count:
    """Rename or re-describe a count. No change, no event and no new version."""
    changes = {}
    if name is not None:
        changes["name"] = _check_name(name)
    if description is not None:
        _check_text("description", description)
        changes["description"] = description
    try:
        with transaction.atomic():
            count = _locked(count_id, if_version)
            changes = {f: v for f, v in changes.items() if getattr(count, f) != v}
            if not changes:
                return count
            for field, new in changes.items():
                setattr(count, field, new)
            count.version += 1
            count.save(update_fields=[*changes, "version", "updated_at"])
            enqueue(events.info_updated(count, "updated"))
    except IntegrityError as exc:
        raise _name_taken() from exc
    return count


def count_delete(*, count_id: uuid.UUID | str, if_version: Collection[int] | None = None) -> None:
    with transaction.atomic():
        count = _locked(count_id, if_version)
        deleted_id, deleted_version = count.id, count.version + 1
        count.delete()
        count.id = deleted_id  # delete() clears the pk; the event still names the count
        enqueue(events.info_updated(count, "deleted", version=deleted_version))


_COLUMNS = [field.column for field in Count._meta.concrete_fields]
# The increment itself; also the baseline bench/bench_write_path.py compares against.
ADD_SQL = f"""
    UPDATE {Count._meta.db_table}
       SET value = value + %(delta)s, version = version + 1, updated_at = clock_timestamp()
     WHERE id = %(count_id)s
 RETURNING {", ".join(_COLUMNS)}
"""


def count_increment(*, count_id: uuid.UUID | str, delta: int = 1) -> Count:
    """Add `delta` (negative allowed) in one atomic UPDATE that also locks the row.

    The UPDATE and the event's outbox row go to PostgreSQL as one statement, its own
    transaction when the caller has none: an increment costs one round trip, as the bare
    UPDATE does. Adding 0 changes nothing, so it writes nothing and emits no event.
    """
    _check_int64("delta", delta)
    if delta == 0:
        return count_get(count_id=count_id)
    count_id = parse_count_id(count_id)
    try:
        rows = write_with_event(
            ADD_SQL, {"delta": delta, "count_id": count_id}, events.value_incremented(count_id)
        )
    except DataError as exc:  # bigint out of range: PostgreSQL refuses to wrap
        raise Conflict({"delta": "The result would overflow a 64-bit integer."}) from exc
    if not rows:  # no such count: the UPDATE, and so the INSERT, wrote nothing
        raise Count.DoesNotExist(f"No count with id {count_id}.")
    return Count.from_db(connection.alias, _COLUMNS, rows[0])


def count_set(
    *, count_id: uuid.UUID | str, value: int, if_version: Collection[int] | None = None
) -> Count:
    _check_int64("value", value)
    with transaction.atomic():
        count = _locked(count_id, if_version)
        old_value = count.value
        if old_value == value:
            return count
        count.value = value
        count.version += 1
        count.save(update_fields=["value", "version", "updated_at"])
        enqueue(events.value_updated(count, old_value=old_value))
    return count
