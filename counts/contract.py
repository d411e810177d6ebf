"""The event contract: one JSON Schema per topic, in `counts/schemas/<topic>.json`.

Those files are the only definition of the events' values. The producer (`counts.events`)
names its topics and actions from here, the dashboard consumer checks every message with
`violation()`, the tests validate the messages they read back from Kafka with `validate()`,
and docs/events.md shows the files (a test keeps its copies equal to them).

Integers are JSON integers: `42`, never `42.0` (JSON Schema alone would accept it).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.validators import extend

COUNT_VALUE_UPDATED = "count-value-updated"
COUNT_INFO_UPDATED = "count-info-updated"
TOPICS = (COUNT_VALUE_UPDATED, COUNT_INFO_UPDATED)
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"

_StrictValidator = extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, instance: type(instance) is int
    ),
)
Check = Callable[[object], bool]
# Keywords that only describe: the fast check may skip them.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description"})
_MISSING = object()


@functools.cache
def schema(topic: str) -> dict:
    """The JSON Schema of a topic's values (raises KeyError for a topic without one)."""
    if topic not in TOPICS:
        raise KeyError(topic)
    document = json.loads((SCHEMAS_DIR / f"{topic}.json").read_text())
    _StrictValidator.check_schema(document)
    return document


@functools.cache
def _validator(topic: str) -> Draft202012Validator:
    return _StrictValidator(schema(topic))


def validate(topic: str, value: object) -> None:
    """Raise jsonschema.ValidationError, naming the broken rule, unless `value` is an event
    of `topic`. The complete check, about 15 times slower than `violation()`."""
    _validator(topic).validate(value)


def info_actions() -> tuple[str, ...]:
    return tuple(schema(COUNT_INFO_UPDATED)["properties"]["action"]["enum"])


def violation(topic: str, value: object) -> str | None:
    """What makes `value` no event of `topic`, or None if it is one: the schema's rules,
    compiled to plain checks for the consumer's hot path."""
    if type(value) is not dict:
        return "the value is not a JSON object"
    for name, check, required, rule in _field_checks(topic):
        field = value.get(name, _MISSING)
        if field is _MISSING:
            if required:
                return f"field {name!r} is missing"
        elif not check(field):
            return f"field {name!r} breaks {rule}"
    return None


@functools.cache
def _field_checks(topic: str) -> tuple[tuple[str, Check, bool, str], ...]:
    """(field, check, required, rule as JSON) per property of the topic's schema."""
    document = schema(topic)
    _refuse_unknown(document, {"type", "required", "properties"})
    if document["type"] != "object":
        raise ValueError(f"{topic}: the fast check knows object schemas only")
    defs, required = document.get("$defs", {}), set(document["required"])
    fields = []
    for name, rule in document["properties"].items():
        rule = _resolved(rule, defs)
        fields.append((name, _compile(rule), name in required, json.dumps(rule)))
    return tuple(fields)


def _resolved(rule: dict, defs: dict) -> dict:
    if "$ref" not in rule:
        return rule
    _refuse_unknown(rule, {"$ref"})
    prefix = "#/$defs/"
    if not rule["$ref"].startswith(prefix):
        raise ValueError(f"the fast check follows {prefix}... references only: {rule}")
    return _resolved(defs[rule["$ref"].removeprefix(prefix)], defs)


def _compile(rule: dict) -> Check:
    """One property's rule as a Python predicate. Only the keywords the schemas use are
    known; any other is refused, so the schemas cannot gain a rule this check would skip."""
    kind = rule.get("type")
    if kind == "integer":
        _refuse_unknown(rule, {"type", "minimum", "maximum"})
        low, high = rule.get("minimum", -math.inf), rule.get("maximum", math.inf)
        return lambda v: type(v) is int and low <= v <= high
    if kind == "string":
        _refuse_unknown(rule, {"type", "minLength", "maxLength", "pattern"})
        shortest, longest = rule.get("minLength", 0), rule.get("maxLength", math.inf)
        search = re.compile(rule.get("pattern", "")).search  # JSON Schema patterns search
        return lambda v: type(v) is str and shortest <= len(v) <= longest and bool(search(v))
    if kind is None and "enum" in rule:
        _refuse_unknown(rule, {"enum"})
        choices = frozenset(rule["enum"])
        if not all(type(choice) is str for choice in choices):
            raise ValueError(f"the fast check knows enums of strings only: {rule}")
        return lambda v: type(v) is str and v in choices
    raise ValueError(f"the fast check does not know this rule: {rule}")


def _refuse_unknown(rule: dict, known: set[str]) -> None:
    if unknown := rule.keys() - known - _ANNOTATIONS:
        raise ValueError(f"the fast check does not know {sorted(unknown)} in {rule}")
