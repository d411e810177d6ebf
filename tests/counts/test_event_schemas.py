"""One JSON Schema file per topic in counts/schemas/, shown in docs/events.md, agreeing with
the model; the consumer's fast check and jsonschema accept and reject the same events."""

import json
import re
import uuid

import jsonschema
import pytest

from counts import contract
from counts.contract import SCHEMAS_DIR, TOPICS
from counts.models import INT64_MAX, INT64_MIN, Count
from tests.support.paths import ROOT

EVENTS_DOC = ROOT / "docs" / "events.md"
# A schema in the docs: a ```json block under a heading naming its topic in backticks.
_DOC_SCHEMA = re.compile(
    r"^#+ [^\n]*`(?P<topic>[a-z0-9.-]+)`[^\n]*\n\s*```json\n(?P<body>.*?)\n```",
    re.MULTILINE | re.DOTALL,
)
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
BOTH = [("count-value-updated", VALUE_EVENT), ("count-info-updated", INFO_EVENT)]


def assert_rejected(topic: str, event: object) -> None:
    """Both checks refuse it: jsonschema (tests) and the compiled one (the consumer)."""
    with pytest.raises(jsonschema.ValidationError):
        contract.validate(topic, event)
    assert contract.violation(topic, event) is not None


def test_every_topic_has_exactly_one_schema_file():
    assert sorted(path.stem for path in SCHEMAS_DIR.glob("*.json")) == sorted(TOPICS)
    for topic in TOPICS:
        assert contract.schema(topic)["title"] == topic


def test_the_docs_show_the_schema_files():
    shown = {
        m["topic"]: json.loads(m["body"]) for m in _DOC_SCHEMA.finditer(EVENTS_DOC.read_text())
    }
    assert shown == {topic: contract.schema(topic) for topic in TOPICS}


def test_the_schemas_bounds_are_the_models():
    name = contract.schema("count-info-updated")["properties"]["name"]
    assert name["maxLength"] == Count._meta.get_field("name").max_length
    for topic in TOPICS:
        int64 = contract.schema(topic)["$defs"]["int64"]
        assert (int64["minimum"], int64["maximum"]) == (INT64_MIN, INT64_MAX)


@pytest.mark.parametrize(("topic", "event"), BOTH)
def test_documented_examples_and_extra_fields_are_valid(topic, event):
    for valid in (event, {**event, "added_later": [1]}):
        contract.validate(topic, valid)
        assert contract.violation(topic, valid) is None


def test_names_may_hold_any_character_outside_the_surrogates():
    for name in ("\U0001f600 caf\u00e9", json.loads('"\\ud83d\\ude00"'), "\ue000\uffff"):
        event = {**INFO_EVENT, "name": name}
        contract.validate("count-info-updated", event)
        assert contract.violation("count-info-updated", event) is None


@pytest.mark.parametrize(
    ("topic", "event", "change"),
    [
        ("count-value-updated", VALUE_EVENT, {"new_value": 2**63}),
        ("count-value-updated", VALUE_EVENT, {"old_value": "41"}),
        ("count-value-updated", VALUE_EVENT, {"old_value": True}),
        ("count-value-updated", VALUE_EVENT, {"version": 0}),
        ("count-value-updated", VALUE_EVENT, {"version": 7.0}),
        ("count-value-updated", VALUE_EVENT, {"count_id": "not-a-uuid"}),
        ("count-value-updated", VALUE_EVENT, {"event_id": None}),
        ("count-value-updated", VALUE_EVENT, {"timestamp": 1.5}),
        ("count-value-updated", VALUE_EVENT, {"timestamp": 2**63}),
        ("count-value-updated", VALUE_EVENT, {"version": 2**63}),
        ("count-info-updated", INFO_EVENT, {"version": 10**309}),
        ("count-info-updated", INFO_EVENT, {"name": "\ud800"}),
        ("count-info-updated", INFO_EVENT, {"name": "lone \udfff low surrogate"}),
        ("count-info-updated", INFO_EVENT, {"action": "renamed"}),
        ("count-info-updated", INFO_EVENT, {"action": ["created"]}),
        ("count-info-updated", INFO_EVENT, {"name": ""}),
        ("count-info-updated", INFO_EVENT, {"name": "n" * 101}),
        ("count-info-updated", INFO_EVENT, {"value": -(2**63) - 1}),
    ],
)
def test_schemas_reject_bad_fields(topic, event, change):
    assert_rejected(topic, {**event, **change})


@pytest.mark.parametrize(("topic", "event"), BOTH)
def test_schemas_require_every_field_and_an_object(topic, event):
    for field in event:
        assert_rejected(topic, {k: v for k, v in event.items() if k != field})
    assert_rejected(topic, [event])


def test_the_fast_check_refuses_a_rule_it_does_not_know():
    with pytest.raises(ValueError, match="multipleOf"):
        contract._compile({"type": "integer", "multipleOf": 2})
