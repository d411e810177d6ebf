"""The event JSON Schemas, read from docs/events.md so the docs and the tests cannot drift.

A schema is a fenced ```json block directly under a heading that names its logical topic
in backticks, e.g. "### `count-value-updated` schema".
"""

from __future__ import annotations

import functools
import json
import re

import jsonschema

from tests.support.paths import ROOT

EVENTS_DOC = ROOT / "docs" / "events.md"

_SCHEMA_BLOCK = re.compile(
    r"^#+ [^\n]*`(?P<topic>[a-z0-9.-]+)`[^\n]*\n\s*```json\n(?P<body>.*?)\n```",
    re.MULTILINE | re.DOTALL,
)


@functools.cache
def _validators() -> dict[str, jsonschema.Draft202012Validator]:
    validators = {}
    for match in _SCHEMA_BLOCK.finditer(EVENTS_DOC.read_text()):
        schema = json.loads(match["body"])
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[match["topic"]] = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
    return validators


def load_schemas() -> dict[str, dict]:
    """Logical topic name -> its JSON Schema, as documented in docs/events.md."""
    return {topic: validator.schema for topic, validator in _validators().items()}


def validate_event(logical_topic: str, value: dict) -> None:
    """Raise jsonschema.ValidationError unless `value` is a valid event of `logical_topic`."""
    _validators()[logical_topic].validate(value)
