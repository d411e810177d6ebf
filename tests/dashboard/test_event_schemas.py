"""docs/events.md holds one valid JSON Schema per topic, and the schemas reject bad events."""

import uuid

import jsonschema
import pytest

from counts.events import TOPICS
from tests.support.event_schemas import load_schemas, validate_event

COUNT_ID = str(uuid.uuid4())
VALUE_EVENT = {
    "event_id": str(uuid.uuid4()),
    "count_id": COUNT_ID,
    "old_value": 41,
    "new_value": 42,
    "version": 7,
    "timestamp": 1764165600123,
}
INFO_EVENT = {
    "event_id": str(uuid.uuid4()),
    "count_id": COUNT_ID,
    "action": "created",
    "name": "signups",
    "value": 0,
    "version": 1,
    "timestamp": 1764165600123,
}


def test_every_topic_has_exactly_one_schema():
    assert sorted(load_schemas()) == sorted(TOPICS)


def test_documented_examples_are_valid():
    validate_event("count-value-updated", VALUE_EVENT)
    validate_event("count-info-updated", INFO_EVENT)


@pytest.mark.parametrize(
    ("topic", "event", "change"),
    [
        ("count-value-updated", VALUE_EVENT, {"new_value": 2**63}),
        ("count-value-updated", VALUE_EVENT, {"old_value": "41"}),
        ("count-value-updated", VALUE_EVENT, {"version": 0}),
        ("count-value-updated", VALUE_EVENT, {"count_id": "not-a-uuid"}),
        ("count-value-updated", VALUE_EVENT, {"timestamp": 1.5}),
        ("count-info-updated", INFO_EVENT, {"action": "renamed"}),
        ("count-info-updated", INFO_EVENT, {"name": ""}),
        ("count-info-updated", INFO_EVENT, {"value": -(2**63) - 1}),
    ],
)
def test_schemas_reject_bad_fields(topic, event, change):
    with pytest.raises(jsonschema.ValidationError):
        validate_event(topic, {**event, **change})


@pytest.mark.parametrize(
    ("topic", "event"), [("count-value-updated", VALUE_EVENT), ("count-info-updated", INFO_EVENT)]
)
def test_schemas_require_every_field(topic, event):
    for field in event:
        with pytest.raises(jsonschema.ValidationError):
            validate_event(topic, {k: v for k, v in event.items() if k != field})
