"""Counts in the Django admin. Every change goes through counts.services, so it emits events."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from counts.models import INT64_MAX, INT64_MIN, Count
from counts.services import (
    count_create,
    count_delete,
    count_increment,
    count_set,
    count_update_info,
)


class ValueSignFilter(admin.SimpleListFilter):
    title = "value"
    parameter_name = "sign"
    _lookups = {"negative": {"value__lt": 0}, "zero": {"value": 0}, "positive": {"value__gt": 0}}

    def lookups(self, request, model_admin):
        return [(sign, sign) for sign in self._lookups]

    def queryset(self, request, queryset):
        lookup = self._lookups.get(self.value())
        return queryset.filter(**lookup) if lookup else queryset


class SetValueForm(forms.Form):
    value = forms.IntegerField(min_value=INT64_MIN, max_value=INT64_MAX)


@admin.register(Count)
class CountAdmin(admin.ModelAdmin):
    list_display = ["name", "value", "version", "updated_at"]
    search_fields = ["name", "description"]
    list_filter = [ValueSignFilter, "updated_at", "created_at"]
    ordering = ["name"]
    fields = ["name", "description", "value", "id", "version", "created_at", "updated_at"]
    actions = ["increment", "decrement", "set_value"]

    def get_readonly_fields(self, request, obj=None):
        # The value changes only through the actions, each of which emits its own event.
        readonly = ["id", "version", "created_at", "updated_at"]
        return [*readonly, "value"] if obj else readonly

    def get_fields(self, request, obj=None):
        return self.fields if obj else ["name", "description", "value"]

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            saved = count_update_info(
                count_id=obj.pk, name=data["name"], description=data["description"]
            )
        else:
            saved = count_create(
                name=data["name"], description=data["description"], value=data["value"]
            )
        _copy_state(saved, obj)  # the admin goes on to log and redirect with `obj`

    def delete_model(self, request, obj):
        count_delete(count_id=obj.pk)

    def delete_queryset(self, request, queryset):
        """The bulk "delete selected" action: one service call, so one event, per count."""
        for count_id in queryset.values_list("pk", flat=True):
            with contextlib.suppress(Count.DoesNotExist):  # deleted meanwhile, event and all
                count_delete(count_id=count_id)

    @admin.action(description="Increment selected counts by 1", permissions=["change"])
    def increment(self, request, queryset):
        self._apply(request, queryset, lambda count: count_increment(count_id=count.pk, delta=1))

    @admin.action(description="Decrement selected counts by 1", permissions=["change"])
    def decrement(self, request, queryset):
        self._apply(request, queryset, lambda count: count_increment(count_id=count.pk, delta=-1))

    @admin.action(description="Set value of selected counts…", permissions=["change"])
    def set_value(self, request: HttpRequest, queryset: QuerySet[Count]):
        """Asks for the value on an intermediate page, then sets it on every selected count."""
        form = SetValueForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            value = form.cleaned_data["value"]
            self._apply(request, queryset, lambda count: count_set(count_id=count.pk, value=value))
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Set the value of counts",
            "opts": self.model._meta,
            "form": form,
            "counts": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/counts/count/set_value.html", context)

    def _apply(
        self, request: HttpRequest, queryset: QuerySet[Count], change: Callable[[Count], object]
    ) -> None:
        """Run `change` on each count in its own transaction; report what failed and why."""
        done = 0
        for count in queryset:
            try:
                change(count)
                done += 1
            except ValidationError as exc:
                self.message_user(request, f"{count}: {'; '.join(exc.messages)}", messages.ERROR)
            except Count.DoesNotExist:
                self.message_user(request, f"{count}: deleted meanwhile", messages.WARNING)
        if done:
            self.message_user(request, f"Changed {done} count(s).", messages.SUCCESS)


def _copy_state(source: Count, target: Count) -> None:
    for field in Count._meta.concrete_fields:
        setattr(target, field.attname, getattr(source, field.attname))
    target._state.adding = False
