"""The Redis connection that caches and the read model share, and their key naming."""

from __future__ import annotations

from django.conf import settings
from django_redis import get_redis_connection
from redis import Redis


def redis_key(*parts: str) -> str:
    """A Redis key under this environment's CACHE_KEY_PREFIX."""
    return ":".join([settings.CACHE_KEY_PREFIX, *parts])


def redis_client() -> Redis:
    """The default cache's client (django-redis keeps its connection pool per process)."""
    return get_redis_connection("default")
