"""The web's database connections: their budget (a system check), and the answer when
PostgreSQL cannot serve a request: 503 with Retry-After, at once. Also the batched delete
the retention jobs share.

A request waits at most DATABASE_POOL_TIMEOUT seconds for one of its process's pooled
connections; psycopg_pool then raises PoolTimeout, which Django hands on as its own
OperationalError. That, like a refused or lost connection, is an overload or an outage the
client may retry shortly, not a bug: it gets 503 and Retry-After rather than a 500.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import InterfaceError, OperationalError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from psycopg_pool import PoolTimeout

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
# Half of PostgreSQL's default max_connections (100): the rest is for the relay, the
# consumer, Celery, migrations and an operator's psql.
WEB_CONNECTIONS_BUDGET = 50
UNAVAILABLE = (OperationalError, InterfaceError)


def pool_exhausted(exc: BaseException) -> bool:
    """True if `exc` is, or was caused by, running out of pooled connections."""
    return isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout)


def log_unavailable(exc: BaseException) -> None:
    if pool_exhausted(exc):
        logger.warning("no database connection free within the pool timeout: %s", exc)
    else:
        logger.warning("database unavailable: %s", exc)


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """503 with Retry-After for views outside the API (admin, dashboard page) when the
    database cannot serve them; the API's exception handler does the same for its views.
    (MiddlewareMixin: sync and async alike, so ASGI requests take no extra thread hop.)"""

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not isinstance(exc, UNAVAILABLE):
            return None
        log_unavailable(exc)
        response = HttpResponse(
            "The database is busy or unavailable; try again shortly.\n",
            status=503,
            content_type="text/plain",
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


@register(Tags.database)
def check_web_connection_budget(app_configs, **kwargs) -> list[CheckMessage]:
    workers, pool = settings.WEB_CONCURRENCY, settings.DATABASE_POOL_MAX_SIZE
    # Besides its pool, each worker has one plain connection that wakes the relay.
    if (connections := workers * (pool + 1)) <= WEB_CONNECTIONS_BUDGET:
        return []
    return [
        CheckWarning(
            f"The web may hold {connections} database connections (WEB_CONCURRENCY "
            f"{workers} x (DATABASE_POOL_MAX_SIZE {pool} + 1)), more than half of "
            "PostgreSQL's default max_connections.",
            hint="Lower WEB_CONCURRENCY or DATABASE_POOL_MAX_SIZE, or raise max_connections "
            "(docs/operations.md, pool sizing).",
            id="infra.W001",
        )
    ]


def delete_in_batches(
    rows: QuerySet, *, batch_size: int, max_batches: int
) -> tuple[int, int, bool]:
    """Delete `rows`, in their order, `batch_size` at a time and at most `max_batches`
    times, each batch a short statement of its own, so a large purge never holds locks for
    long. Returns (deleted, batches, complete); not complete: rows may remain."""
    deleted, batches, complete = 0, 0, False
    while not complete and batches < max_batches:
        batch = rows.values("pk")[:batch_size]
        removed, _ = rows.model._default_manager.filter(pk__in=batch).delete()
        deleted += removed
        batches += 1
        complete = removed < batch_size
    return deleted, batches, complete
