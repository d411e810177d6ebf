"""Parse and validate count events from Kafka (the wire contract is docs/events.md).

The consumer only needs a few fields of each event, but it checks all the fields the
contract requires, so a message that breaks the contract is dead-lettered at the door
instead of half-applied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from counts.events import COUNT_INFO_UPDATED, COUNT_VALUE_UPDATED
from counts.models import INT64_MAX, INT64_MIN

INFO_ACTIONS = ("created", "updated", "deleted")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class PoisonMessage(ValueError):
    """A message that no retry can make valid; `reason` names the class of failure."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CountEvent:
    """One event, reduced to what the read model needs. `action` is "value" for value events."""

    event_id: str
    count_id: str
    version: int
    timestamp: int
    action: str
    value: int
    name: str | None = None
    old_value: int | None = None


def _field(body: dict, name: str, kind: str, check=lambda value: True):
    value = body.get(name)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    valid = is_int if kind == "integer" else isinstance(value, str)
    if not valid or not check(value):
        raise PoisonMessage("schema", f"field {name!r} is missing or not a valid {kind}")
    return value


def _int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def parse_event(logical_topic: str, raw: bytes | None) -> CountEvent:
    """Decode one message value of a count topic; raise PoisonMessage if it breaks the contract."""
    try:
        body = json.loads(raw or b"")
    except (UnicodeDecodeError, ValueError) as exc:
        raise PoisonMessage("not-json", str(exc)) from exc
    if not isinstance(body, dict):
        raise PoisonMessage("schema", "the value is not a JSON object")
    common = {
        "event_id": _field(body, "event_id", "string", _UUID.match),
        "count_id": _field(body, "count_id", "string", _UUID.match),
        "version": _field(body, "version", "integer", lambda v: v >= 1),
        "timestamp": _field(body, "timestamp", "integer", lambda v: v >= 0),
    }
    if logical_topic == COUNT_VALUE_UPDATED:
        return CountEvent(
            **common,
            action="value",
            value=_field(body, "new_value", "integer", _int64),
            old_value=_field(body, "old_value", "integer", _int64),
        )
    if logical_topic == COUNT_INFO_UPDATED:
        return CountEvent(
            **common,
            action=_field(body, "action", "string", lambda v: v in INFO_ACTIONS),
            value=_field(body, "value", "integer", _int64),
            name=_field(body, "name", "string", lambda v: 1 <= len(v) <= 100),
        )
    raise PoisonMessage("unknown-topic", f"no events are expected on {logical_topic!r}")
