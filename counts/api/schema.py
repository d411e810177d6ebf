"""The API's OpenAPI document, exact: every status a view can answer, with its body and headers.

Errors have two shapes (docs/api.md): `{"detail": "..."}` and, for input that names a
field or parameter, `{"<name>": ["<message>", ...]}`. Request bodies and counts allow no
properties beyond their fields. The views take their responses from here.
"""

from __future__ import annotations

from drf_spectacular.extensions import (
    OpenApiSerializerExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers

from counts.api.filters import CountFilter
from counts.api.serializers import TEXT_PATTERN, ClosedSchema, CountOutput, StringField
from counts.models import INT64_MAX, INT64_MIN


class ClosedSchemaExtension(OpenApiSerializerExtension):
    target_class = ClosedSchema
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class StringFieldExtension(OpenApiSerializerFieldExtension):
    target_class = StringField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "pattern": self.target.pattern}


class Problem(ClosedSchema, serializers.Serializer):
    """An error about the request as a whole."""

    detail = serializers.CharField()


class FieldErrors(serializers.Serializer):
    """Errors by field or parameter name, each a list of messages."""


class FieldErrorsExtension(OpenApiSerializerExtension):
    target_class = FieldErrors

    def map_serializer(self, auto_schema, direction):
        messages = {"type": "array", "items": {"type": "string"}, "minItems": 1}
        return {"type": "object", "minProperties": 1, "additionalProperties": messages}


ERROR = PolymorphicProxySerializer(
    component_name="Error",
    serializers=[Problem, FieldErrors],
    resource_type_field_name=None,
)


def _header(name: str, schema: dict, codes: list[int], description: str, required=False):
    return OpenApiParameter(
        name,
        schema,
        OpenApiParameter.HEADER,
        required=required,
        description=description,
        response=codes,
    )


def _problem(description: str) -> OpenApiResponse:
    return OpenApiResponse(Problem, description)


ERRORS = {
    400: OpenApiResponse(
        ERROR, "Malformed input; nothing was written. Field errors name the field."
    ),
    401: _problem("Credentials are missing (writes) or invalid."),
    403: _problem("Session authentication without the CSRF token, or not allowed."),
    404: _problem("No count with this id."),
    409: OpenApiResponse(
        ERROR,
        "Valid, but the count's state refuses it (a taken name, a 64-bit overflow: field "
        "errors), or the Idempotency-Key's first request vanished while this one waited.",
    ),
    412: _problem("If-Match names another version: the count changed; nothing was written."),
    415: _problem("The body is not JSON (Content-Type)."),
    422: _problem("The Idempotency-Key was already used with a different request."),
    429: _problem("Over the per-user write rate; see Retry-After."),
    503: _problem("The database is unavailable, or the server is overloaded; retry later."),
}

RETRY_AFTER = _header(
    "Retry-After",
    {"type": "string", "pattern": "^[0-9]+$"},
    [429, 503],
    "Seconds to wait before retrying.",
)


def responses(success: dict, *errors: int) -> dict:
    """`success` (status: body) and the listed error statuses, with their bodies."""
    return {**success, **{code: ERRORS[code] for code in errors}}


def count_responses(status: int, *errors: int) -> dict:
    return responses({status: CountOutput}, *errors)


LOCATION = _header("Location", OpenApiTypes.STR, [201], "The new count's URL.", required=True)
INT64 = {"type": "integer", "format": "int64", "minimum": INT64_MIN, "maximum": INT64_MAX}
TEXT = {"type": "string", "pattern": TEXT_PATTERN}


def _query(name: str, schema: dict, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, schema, OpenApiParameter.QUERY, description=description)


ORDERING_KEYS = [key for key, _ in CountFilter.base_filters["ordering"].extra["choices"]]
LIST_PARAMETERS = [
    _query("name", TEXT, "Exact name."),
    _query("search", TEXT, "Case-insensitive substring of name or description."),
    _query("value_min", INT64, "value >= this."),
    _query("value_max", INT64, "value <= this."),
    OpenApiParameter(
        "ordering",
        # At least one key: an empty `ordering=` could be read as no key or as an empty one.
        {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ORDERING_KEYS}},
        OpenApiParameter.QUERY,
        description="Sort keys, comma-separated; prefix with - for descending. "
        "Default: name; ties go by name.",
        style="form",
        explode=False,
    ),
    _query("limit", {"type": "integer", "minimum": 1}, "Page size; above 500 it is 500."),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": INT64_MAX}, "Page start."),
]
