"""API input and output. Inputs are strict: JSON types only, no unknown fields.

Every constraint a field checks is one its OpenAPI schema states (counts.api.schema), so a
request the schema allows is never refused for its shape, and one it forbids always is.
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers

from counts.models import INT64_MAX, INT64_MIN, Count

NAME_MAX_LENGTH = Count._meta.get_field("name").max_length
# PostgreSQL text cannot hold NUL; a name needs a character other than whitespace.
TEXT_PATTERN = r"^[^\x00]*$"
# For fields that may be blank: the schema then offers "" as a oneOf branch of its own.
NON_EMPTY_TEXT_PATTERN = r"^[^\x00]+$"
# Every character Python's str.strip() removes, spelt out: regex engines disagree on \s.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NAME_PATTERN = rf"^[^\x00]*[^{WHITESPACE}\x00][^\x00]*$"


class ClosedSchema:
    """Marker: this serializer's OpenAPI schema allows no properties beyond its fields."""


class Int64Field(serializers.IntegerField):
    """A JSON integer within 64 bits. Strings, floats and booleans are refused, not coerced."""

    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=INT64_MIN, max_value=INT64_MAX, **kwargs)

    def to_internal_value(self, data):
        if type(data) is not int:  # bool is an int subclass: exclude it too
            self.fail("invalid")
        return data


class StringField(serializers.CharField):
    """A JSON string; numbers are refused, not coerced.

    `pattern` states in the OpenAPI schema what the field and the service refuse anyway: DRF
    refuses NUL characters, the service whitespace-only names.
    """

    def __init__(self, *, pattern: str = TEXT_PATTERN, **kwargs) -> None:
        self.pattern = pattern
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def name_field(**kwargs) -> StringField:
    """A count's name: its length is checked as sent; the service trims it."""
    return StringField(
        max_length=NAME_MAX_LENGTH, trim_whitespace=False, pattern=NAME_PATTERN, **kwargs
    )


class StrictInput(ClosedSchema, serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error rather than a silent no-op."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping) and (unknown := sorted(set(data) - set(self.fields))):
            raise serializers.ValidationError({field: ["Unknown field."] for field in unknown})
        return super().to_internal_value(data)


class CountCreateInput(StrictInput):
    name = name_field()
    description = StringField(
        required=False, allow_blank=True, default="", pattern=NON_EMPTY_TEXT_PATTERN
    )
    value = Int64Field(required=False, default=0)


class CountUpdateInput(StrictInput):
    name = name_field(required=False)
    description = StringField(required=False, allow_blank=True, pattern=NON_EMPTY_TEXT_PATTERN)


class CountIncrementInput(StrictInput):
    delta = Int64Field(required=False, default=1, help_text="May be negative. Default 1.")


class CountSetInput(StrictInput):
    value = Int64Field()


_TIMESTAMP = serializers.DateTimeField()


class CountOutput(ClosedSchema, serializers.ModelSerializer):
    """A count; `version` grows by one on every change."""

    class Meta:
        model = Count
        fields = ["id", "name", "description", "value", "version", "created_at", "updated_at"]
        read_only_fields = fields

    def to_representation(self, instance: Count) -> dict:
        """What ModelSerializer would give (a test holds them equal), without building its
        fields for every count: that cost more than a tenth of an increment's time."""
        return {
            "id": str(instance.id),
            "name": instance.name,
            "description": instance.description,
            "value": instance.value,
            "version": instance.version,
            "created_at": _TIMESTAMP.to_representation(instance.created_at),
            "updated_at": _TIMESTAMP.to_representation(instance.updated_at),
        }
