"""One batch of messages: parse them (pure), then apply their events to Redis.

`parse_batch` sorts the messages into events and poison without touching anything.
`BatchApplier.apply` applies the events of counts that exist, in one Redis round trip
(read_model.py), and turns the events of counts that never existed (`unknown-count`), and
those the read model's script refuses (`redis-script`), into poison. A batch with counts
this process has not met yet costs up to two queries and one more Redis round trip first
(`_unknown_counts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Message

from counts.models import Count
from dashboard import read_model
from dashboard.events import CountEvent, PoisonMessage, parse_event
from outbox.selectors import published_keys

# The ids of counts met in the database are remembered up to this many, then forgotten.
KNOWN_IDS_LIMIT = 100_000

Poison = tuple[Message, PoisonMessage]


@dataclass
class ParsedBatch:
    events: list[tuple[Message, CountEvent]] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)


@dataclass(frozen=True)
class AppliedBatch:
    events: list[CountEvent]  # applied (each one took effect or was already in place)
    poison: list[Poison]  # events about counts that never existed, or the script refused


def parse_batch(records: list[Message], logical_topics: Mapping[str, str]) -> ParsedBatch:
    """Decode data messages; `logical_topics` maps each subscribed topic to its logical name."""
    batch = ParsedBatch()
    for message in records:
        try:
            event = parse_event(logical_topics[message.topic()], message.key(), message.value())
            batch.events.append((message, event))
        except PoisonMessage as exc:
            batch.poison.append((message, exc))
    return batch


class BatchApplier:
    """Applies parsed batches; remembers which counts it found in the database."""

    def __init__(self) -> None:
        self._known_ids: set[str] = set()

    def apply(self, batch: ParsedBatch) -> AppliedBatch:
        """Apply the events of counts that exist. Raises RedisError or DatabaseError, having
        then applied nothing that a retry would not apply again."""
        unknown = self._unknown_counts([event for _, event in batch.events])
        known = [event for _, event in batch.events if event.count_id not in unknown]
        refused = read_model.apply_events_refusing_poison(known)
        poison = [
            (message, PoisonMessage("unknown-count", event.count_id))
            for message, event in batch.events
            if event.count_id in unknown
        ]
        poison += [
            (message, PoisonMessage("redis-script", refused[event]))
            for message, event in batch.events
            if event in refused
        ]
        return AppliedBatch([event for event in known if event not in refused], poison)

    def _unknown_counts(self, events: list[CountEvent]) -> set[str]:
        """Ids of counts that never existed: events about them are dead-lettered.

        Only ids this process has not seen yet cost a query. A count missing from the
        database may just have been deleted (its deletion may even be on its way on the
        other topic); its events are genuine if the outbox has them or the read model knows
        the count, and applying them is harmless: versions and tombstones settle it.
        """
        deleted = {e.count_id for e in events if e.action == "deleted"}
        fresh = {e.count_id for e in events} - deleted - self._known_ids
        if not fresh:
            return set()
        existing = {
            str(pk) for pk in Count.objects.filter(pk__in=fresh).values_list("pk", flat=True)
        }
        if len(self._known_ids) > KNOWN_IDS_LIMIT:
            self._known_ids.clear()
        self._known_ids |= existing
        missing = fresh - existing
        missing -= read_model.seen_counts(missing)
        if missing:
            event_ids = [e.event_id for e in events if e.count_id in missing]
            missing -= published_keys(event_ids)
        return missing
