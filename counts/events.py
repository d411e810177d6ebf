"""The events a count change emits, as counts/contract.py defines them (docs/events.md)."""

import time

from counts import contract
from counts.contract import COUNT_INFO_UPDATED, COUNT_VALUE_UPDATED
from counts.contract import TOPICS as TOPICS
from counts.models import Count
from outbox.services import Event, Sql


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# The updated row's updated_at in epoch ms: the time PostgreSQL wrote it (ADD_SQL sets it
# to clock_timestamp(), after any wait for the row's lock), so both stamps agree.
UPDATED_AT_MS = Sql("floor(extract(epoch FROM updated_at) * 1000)::bigint")


def _event(
    topic: str,
    count_id: object,
    version: int | Sql,
    body: dict,
    timestamp: Sql | None = None,
) -> Event:
    key = str(count_id)
    return Event(
        topic=topic,
        key=key,
        value={
            "count_id": key,
            **body,
            "version": version,
            "timestamp": now_ms() if timestamp is None else timestamp,
        },
        headers={
            "event_type": topic,
            "count_version": _text(version),
            "content_type": "application/json",
        },
    )


def _text(value: int | Sql) -> str | Sql:
    """Headers are strings, also when PostgreSQL computes them."""
    return Sql(f"{value.expression}::text") if isinstance(value, Sql) else str(value)


def value_updated(count: Count, old_value: int) -> Event:
    body = {"old_value": old_value, "new_value": count.value}
    return _event(COUNT_VALUE_UPDATED, count.id, count.version, body)


def value_incremented(count_id: object) -> Event:
    """value_updated() of an increment, for the statement that does it: the fields only that
    UPDATE knows are read from its updated row, `%(delta)s` being the statement's parameter
    (counts.services.count_increment), and the time is taken once it holds the row."""
    body = {"old_value": Sql("value - %(delta)s"), "new_value": Sql("value")}
    return _event(COUNT_VALUE_UPDATED, count_id, Sql("version"), body, timestamp=UPDATED_AT_MS)


def info_updated(count: Count, action: str, version: int | None = None) -> Event:
    if action not in contract.info_actions():
        raise ValueError(f"{action!r} is not an action of {COUNT_INFO_UPDATED}")
    body = {"action": action, "name": count.name, "value": count.value}
    return _event(COUNT_INFO_UPDATED, count.id, version or count.version, body)
