"""API input and output. Inputs are strict: JSON types only, no unknown fields."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers

from counts.models import INT64_MAX, INT64_MIN, Count

NAME_MAX_LENGTH = Count._meta.get_field("name").max_length


class Int64Field(serializers.IntegerField):
    """A JSON integer within 64 bits. Strings, floats and booleans are refused, not coerced."""

    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=INT64_MIN, max_value=INT64_MAX, **kwargs)

    def to_internal_value(self, data):
        if type(data) is not int:  # bool is an int subclass: exclude it too
            self.fail("invalid")
        return data


class StringField(serializers.CharField):
    """A JSON string; numbers are refused, not coerced."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictInput(serializers.Serializer):
    """Refuses fields it does not know, so a typo is an error rather than a silent no-op."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping) and (unknown := sorted(set(data) - set(self.fields))):
            raise serializers.ValidationError({field: ["Unknown field."] for field in unknown})
        return super().to_internal_value(data)


class CountCreateInput(StrictInput):
    name = StringField(max_length=NAME_MAX_LENGTH)
    description = StringField(required=False, allow_blank=True, default="")
    value = Int64Field(required=False, default=0)


class CountUpdateInput(StrictInput):
    name = StringField(max_length=NAME_MAX_LENGTH, required=False)
    description = StringField(required=False, allow_blank=True)


class CountIncrementInput(StrictInput):
    delta = Int64Field(required=False, default=1, help_text="May be negative. Default 1.")


class CountSetInput(StrictInput):
    value = Int64Field()


_TIMESTAMP = serializers.DateTimeField()


class CountOutput(serializers.ModelSerializer):
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
