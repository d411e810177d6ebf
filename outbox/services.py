"""The outbox's write API: `enqueue` an event inside the transaction that caused it."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from infra.topics import topic_name
from outbox import wakeup
from outbox.models import OutboxMessage


class OutboxError(RuntimeError):
    """The outbox was used in a way that could lose or orphan an event."""


@dataclass(frozen=True)
class Sql:
    """A field PostgreSQL computes from the changed row, in events for `write_with_event`."""

    expression: str


@dataclass(frozen=True)
class Event:
    """An event to publish: `topic` is the logical name, the prefix is added on enqueue."""

    topic: str
    key: str
    value: Mapping
    headers: Mapping[str, str] = field(default_factory=dict)
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


def lane_for_key(key: str) -> int:
    """A stable lane for a key: every event of one key lands in the same lane."""
    return zlib.crc32(key.encode()) % settings.OUTBOX_LANES


def serialize(value: Mapping) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _stamped(event: Event) -> tuple[dict, dict]:
    """The event's value and headers, both carrying its id."""
    event_id = str(event.event_id)
    return {"event_id": event_id, **event.value}, {"event_id": event_id, **event.headers}


def outbox_message(event: Event) -> OutboxMessage:
    """The outbox row of `event`, unsaved: exactly what `enqueue` writes."""
    value, headers = _stamped(event)
    return OutboxMessage(
        event_id=event.event_id,
        topic=topic_name(event.topic),
        key=event.key,
        value=serialize(value),
        headers=headers,
        lane=lane_for_key(event.key),
    )


def enqueue(*events: Event) -> list[OutboxMessage]:
    """Write events to the outbox as part of the current transaction.

    Refuses to run outside `transaction.atomic()`: an event committed without its change
    (or a change without its event) is exactly what the outbox exists to prevent.
    """
    _require_atomic()
    rows = [outbox_message(event) for event in events]
    _insert(rows)
    wakeup.notify_relays_after_commit()
    return rows


def _require_atomic() -> None:
    if not connection.in_atomic_block:
        raise OutboxError("outbox.enqueue() must run inside transaction.atomic()")


_TABLE = OutboxMessage._meta.db_table
_COLUMNS = "event_id, topic, key, value, headers, lane, state, created_at, attempts, last_error"
_NEW = f"'{OutboxMessage.State.PENDING}', now(), 0, ''"  # state, created_at, attempts, error
_CHANGED = "changed"  # the CTE of the changed rows, which the event INSERT reads
_INSERT = f"""
    INSERT INTO {_TABLE} ({_COLUMNS})
    VALUES {{rows}}
 RETURNING id, created_at
"""
_ROW = f"(%s, %s, %s, %s, %s, %s, {_NEW})"


def _insert(rows: list[OutboxMessage]) -> None:
    """One plain INSERT on the hot path of every write (the ORM's bulk_create costs about
    0.2 ms more per write; bench/bench_write_path.py measures the write path)."""
    params = [
        value
        for row in rows
        for value in (
            row.event_id,
            row.topic,
            row.key,
            row.value,
            json.dumps(row.headers),
            row.lane,
        )
    ]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT.format(rows=", ".join([_ROW] * len(rows))), params)
        for row, (pk, created_at) in zip(rows, cursor.fetchall(), strict=True):
            row.pk, row.created_at = pk, created_at
            row._state.adding = False


def write_with_event(change: str, params: Mapping[str, object], event: Event) -> list[tuple]:
    """Run `change`, a data-modifying statement with RETURNING, and write `event` to the
    outbox once for each row it returns, in ONE statement; return those rows.

    The event's `Sql` fields are expressions over the returned columns; its value comes out
    byte for byte as `serialize()` would write it. One statement is atomic on its own, so
    outside `transaction.atomic()` it runs as its own transaction: one round trip, where a
    transaction block would add a BEGIN and a COMMIT. Inside one, it runs in a savepoint, so
    a failed statement leaves the caller's transaction usable; the relay is then woken once
    that transaction commits.
    """
    insert, event_params = _event_insert(event)
    statement = f"WITH {_CHANGED} AS ({change}), event AS ({insert}) SELECT * FROM {_CHANGED}"
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with savepoint, connection.cursor() as cur:
        cur.execute(statement, {**params, **event_params})
        rows = cur.fetchall()
    if rows:
        wakeup.notify_relays_after_commit()  # outside a transaction: at once
    return rows


def _event_insert(event: Event) -> tuple[str, dict]:
    """The INSERT of `event` for each row of the CTE of the changed rows, and its parameters."""
    params: dict[str, object] = {
        "outbox_event_id": event.event_id,
        "outbox_topic": topic_name(event.topic),
        "outbox_key": event.key,
        "outbox_lane": lane_for_key(event.key),
    }
    value, headers = _stamped(event)
    insert = f"""
        INSERT INTO {_TABLE} ({_COLUMNS})
        SELECT %(outbox_event_id)s::uuid, %(outbox_topic)s::text, %(outbox_key)s::text,
               convert_to({_json_sql(value, params)}, 'UTF8'),
               {_jsonb_sql(headers, params)}, %(outbox_lane)s::smallint, {_NEW}
          FROM {_CHANGED}
    """
    return insert, params


def _json_sql(fields: Mapping, params: dict) -> str:
    """SQL for the compact JSON text of `fields`: Python serialises the known parts (as
    parameters), PostgreSQL's to_json() the `Sql` ones."""
    parts = []
    for n, (name, part) in enumerate(fields.items()):
        opening = f"{'{' if n == 0 else ','}{json.dumps(name)}:"
        if isinstance(part, Sql):
            params[f"outbox_value_{n}"] = opening
            parts.append(f"%(outbox_value_{n})s::text, to_json({part.expression})")
        else:
            params[f"outbox_value_{n}"] = opening + json.dumps(part, ensure_ascii=False)
            parts.append(f"%(outbox_value_{n})s::text")
    return f"concat({', '.join(parts)}, '}}')"


def _jsonb_sql(fields: Mapping, params: dict) -> str:
    """SQL for the jsonb of `fields` (the headers column), its `Sql` fields computed."""
    known = {name: part for name, part in fields.items() if not isinstance(part, Sql)}
    computed = [(name, part) for name, part in fields.items() if isinstance(part, Sql)]
    params["outbox_headers"] = json.dumps(known)
    pairs = ", ".join(f"'{name}', {part.expression}" for name, part in computed)
    return f"%(outbox_headers)s::jsonb || jsonb_build_object({pairs})"
