"""Assert the exact outbox rows a piece of code wrote, checked against the event contract."""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass

from django.conf import settings

from counts.contract import validate as validate_event
from outbox.models import OutboxMessage


@dataclass(frozen=True)
class Expected:
    """One expected event: its logical topic, count, body fields (no ids/time) and version."""

    topic: str
    count_id: object
    body: dict
    version: int


def value_event(count_id, old: int, new: int, version: int) -> Expected:
    return Expected("count-value-updated", count_id, {"old_value": old, "new_value": new}, version)


def info_event(count_id, action: str, name: str, value: int, version: int) -> Expected:
    body = {"action": action, "name": name, "value": value}
    return Expected("count-info-updated", count_id, body, version)


def decode(row: OutboxMessage) -> dict:
    return json.loads(bytes(row.value))


class OutboxWatch:
    """Remembers the newest outbox row at creation; then checks only the rows written since."""

    def __init__(self) -> None:
        last = OutboxMessage.objects.order_by("-id").first()
        self.after_id = last.id if last else 0
        self.started_ms = time.time_ns() // 1_000_000

    def new_rows(self) -> list[OutboxMessage]:
        return list(OutboxMessage.objects.filter(id__gt=self.after_id).order_by("id"))

    def assert_unchanged(self) -> None:
        assert self.new_rows() == []

    def assert_events(self, *expected: Expected) -> list[OutboxMessage]:
        rows = self.new_rows()
        assert len(rows) == len(expected), [decode(row) for row in rows]
        for row, want in zip(rows, expected, strict=True):
            self._assert_row(row, want)
        return rows

    def _assert_row(self, row: OutboxMessage, want: Expected) -> None:
        key = str(want.count_id)
        value = decode(row)
        validate_event(want.topic, value)
        assert row.topic == f"{settings.KAFKA_TOPIC_PREFIX}{want.topic}"
        assert row.key == key
        assert row.lane == zlib.crc32(key.encode()) % settings.OUTBOX_LANES
        assert row.state == OutboxMessage.State.PENDING
        assert value == {
            "event_id": str(row.event_id),
            "count_id": key,
            **want.body,
            "version": want.version,
            "timestamp": value["timestamp"],
        }
        assert self.started_ms <= value["timestamp"] <= time.time_ns() // 1_000_000
        assert bytes(row.value) == json.dumps(value, separators=(",", ":")).encode()
        assert row.headers == {
            "event_id": str(row.event_id),
            "event_type": want.topic,
            "count_version": str(want.version),
            "content_type": "application/json",
        }
