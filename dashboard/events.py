"""Parse and validate count events from Kafka against the contract (counts/contract.py).

The consumer only needs a few fields of each event, but it checks all the fields the
contract requires, so a message that breaks the contract is dead-lettered at the door
instead of half-applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from counts import contract
from counts.contract import COUNT_VALUE_UPDATED


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


def parse_event(logical_topic: str, key: bytes | None, raw: bytes | None) -> CountEvent:
    """Decode one message of a count topic; raise PoisonMessage if it breaks the contract."""
    try:
        body = json.loads(raw or b"")
    except (UnicodeDecodeError, ValueError) as exc:
        raise PoisonMessage("not-json", str(exc)) from exc
    # KeyError for a topic without a schema: the consumer subscribes to the contract's only.
    if (problem := contract.violation(logical_topic, body)) is not None:
        raise PoisonMessage("schema", problem)
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
