"""The outbox in the admin: read-only, with retry and discard for parked rows."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.text import Truncator
from django.utils.timesince import timesince

from outbox.models import OutboxMessage
from outbox.parked import parked_discard, parked_retry


class EstimatedCountPaginator(Paginator):
    """The unfiltered list counts with PostgreSQL's estimate: an exact count(*) of days of
    published rows on every page view would take seconds. Filtered lists count exactly."""

    @cached_property
    def count(self) -> int:
        if self.object_list.query.has_filters():
            return super().count
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                [OutboxMessage._meta.db_table],
            )
            estimate = cursor.fetchone()[0]
        return estimate if estimate > 0 else super().count  # -1: never analysed


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ["id", "topic", "key", "state", "age", "attempts", "error"]
    list_filter = ["state", "topic", "created_at"]
    search_fields = ["key", "=event_id"]
    ordering = ["-id"]
    show_full_result_count = False  # counting a large outbox on every page view is slow
    paginator = EstimatedCountPaginator
    readonly_fields = [
        "id",
        "event_id",
        "topic",
        "key",
        "payload",
        "headers",
        "lane",
        "state",
        "created_at",
        "published_at",
        "attempts",
        "last_error",
    ]
    fields = readonly_fields
    actions = ["retry", "discard"]

    @admin.display(ordering="created_at")
    def age(self, message: OutboxMessage) -> str:
        return timesince(message.created_at)

    @admin.display(description="last error")
    def error(self, message: OutboxMessage) -> str:
        return Truncator(message.last_error).chars(80)

    @admin.display(description="value")
    def payload(self, message: OutboxMessage) -> str:
        return bytes(message.value).decode(errors="replace")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox.change_outboxmessage")

    @admin.action(description="Retry selected parked rows", permissions=["manage"])
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        retried = parked_retry(messages=queryset)
        self.message_user(request, f"{retried} parked rows will be sent again.")

    @admin.action(description="Discard selected parked rows (never sent)", permissions=["manage"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        discarded = parked_discard(messages=queryset)
        self.message_user(
            request, f"{discarded} parked rows discarded for good.", level=messages.WARNING
        )
