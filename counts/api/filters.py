"""Query parameters of the count list."""

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from counts.models import INT64_MAX, INT64_MIN, Count


class Int64Filter(django_filters.NumberFilter):
    field_class = forms.IntegerField

    def __init__(self, **kwargs) -> None:
        super().__init__(min_value=INT64_MIN, max_value=INT64_MAX, **kwargs)


class StableOrderingFilter(django_filters.OrderingFilter):
    """Ties broken by the unique name, so limit/offset pages neither repeat nor skip counts."""

    def filter(self, qs: QuerySet[Count], value) -> QuerySet[Count]:
        qs = super().filter(qs, value)
        return qs.order_by(*qs.query.order_by, "name") if value else qs


class NoEmptyValuesForm(forms.Form):
    """Refuses `?value_max=` and `?ordering=`: django-filter reads an empty value as no
    filter at all, but the schema has no empty value for these, and a client who sent one
    meant something. (An empty text parameter is a text: the schema allows it.)"""

    def clean(self) -> dict:
        cleaned = super().clean()
        for name, field in self.fields.items():
            if self.data.get(name) == "" and not isinstance(field, forms.CharField):
                self.add_error(name, "A value is required.")
        return cleaned


class CountFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(help_text="Exact name.")
    value_min = Int64Filter(field_name="value", lookup_expr="gte", help_text="value >= this.")
    value_max = Int64Filter(field_name="value", lookup_expr="lte", help_text="value <= this.")
    search = django_filters.CharFilter(
        method="filter_search", help_text="Case-insensitive substring of name or description."
    )
    ordering = StableOrderingFilter(
        fields=("name", "value", "created_at", "updated_at"),
        help_text="Sort key; prefix with - for descending. Default: name.",
    )

    class Meta:
        model = Count
        fields: list[str] = []
        form = NoEmptyValuesForm

    def filter_search(self, queryset: QuerySet[Count], name: str, value: str) -> QuerySet[Count]:
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))
