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


_CHECKS = {
    "uuid": lambda v: type(v) is str and _UUID.match(v) is not None,
    "int64": lambda v: type(v) is int and INT64_MIN <= v <= INT64_MAX,
    "version": lambda v: type(v) is int and v >= 1,
    "timestamp": lambda v: type(v) is int and v >= 0,
    "action": lambda v: v in INFO_ACTIONS,
    "name": lambda v: type(v) is str and 1 <= len(v) <= 100,
}
_COMMON = {"event_id": "uuid", "count_id": "uuid", "version": "version", "timestamp": "timestamp"}
_FIELDS = {
    COUNT_VALUE_UPDATED: {**_COMMON, "old_value": "int64", "new_value": "int64"},
    COUNT_INFO_UPDATED: {**_COMMON, "action": "action", "name": "name", "value": "int64"},
}


def parse_event(logical_topic: str, key: bytes | None, raw: bytes | None) -> CountEvent:
    """Decode one message of a count topic; raise PoisonMessage if it breaks the contract."""
    fields = _FIELDS[logical_topic]  # the consumer subscribes to these topics only
    try:
        body = json.loads(raw or b"")
    except (UnicodeDecodeError, ValueError) as exc:
        raise PoisonMessage("not-json", str(exc)) from exc
    if not isinstance(body, dict):
        raise PoisonMessage("schema", "the value is not a JSON object")
    for name, kind in fields.items():
        if not _CHECKS[kind](body.get(name)):
            raise PoisonMessage("schema", f"field {name!r} is missing or not a valid {kind}")
    if key != body["count_id"].encode():  # the key places the event in its count's order
        raise PoisonMessage("schema", "the message key is not the count id")
    is_value = logical_topic == COUNT_VALUE_UPDATED
    return CountEvent(
        event_id=body["event_id"],
        count_id=body["count_id"],
        version=body["version"],
        timestamp=body["timestamp"],
        action="value" if is_value else body["action"],
        value=body["new_value"] if is_value else body["value"],
        name=None if is_value else body["name"],
    )
