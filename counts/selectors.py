"""Reads of counts from the database (the API caches them with counts.cache)."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from counts.models import Count, parse_count_id


def count_list() -> QuerySet[Count]:
    return Count.objects.all()


def count_get(*, count_id: uuid.UUID | str) -> Count:
    return Count.objects.get(pk=parse_count_id(count_id))
