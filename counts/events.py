"""The events a count change emits, in the wire format of docs/events.md."""

import time

from counts.models import Count
from outbox.services import Event

COUNT_VALUE_UPDATED = "count-value-updated"
COUNT_INFO_UPDATED = "count-info-updated"
TOPICS = (COUNT_VALUE_UPDATED, COUNT_INFO_UPDATED)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _event(topic: str, count: Count, version: int, body: dict) -> Event:
    count_id = str(count.id)
    return Event(
        topic=topic,
        key=count_id,
        value={"count_id": count_id, **body, "version": version, "timestamp": now_ms()},
        headers={
            "event_type": topic,
            "count_version": str(version),
            "content_type": "application/json",
        },
    )


def value_updated(count: Count, old_value: int) -> Event:
    body = {"old_value": old_value, "new_value": count.value}
    return _event(COUNT_VALUE_UPDATED, count, count.version, body)


def info_updated(count: Count, action: str, version: int | None = None) -> Event:
    body = {"action": action, "name": count.name, "value": count.value}
    return _event(COUNT_INFO_UPDATED, count, version or count.version, body)
