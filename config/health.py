"""Health of the parts countstream depends on, for probes, `--check` commands and /metrics.

`/healthz` answers while the process runs; `/readyz` says whether PostgreSQL, Redis and Kafka
answer, each part with its state, and is 503 when any is down. A web pod's readiness probe
asks `/readyz?check=database` only: thanks to the outbox, web serves writes while Kafka is
away, and reads fall back to the database while Redis is. `manage.py relay --check` and
`consume --check` use the same `check_*` functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_redis import get_redis_connection

from outbox.kafka import admin_client

logger = logging.getLogger(__name__)

KAFKA_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_ms: float


def _timed(probe: Callable[[], str]) -> CheckResult:
    """Run `probe` (it returns a detail string or raises) and time it."""
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # any failure means "not ready"; the detail says which
        detail, ok = f"{type(exc).__name__}: {exc}".strip(), False
    return CheckResult(ok, detail, round((time.perf_counter() - started) * 1000, 2))


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} {connection.settings_dict['NAME']}"


def _redis() -> str:
    get_redis_connection("default").ping()
    return "ping"


def _kafka(timeout: float) -> str:
    # A fresh client each time: a long-lived one would keep reconnecting while Kafka is away.
    metadata = admin_client().list_topics(timeout=timeout)
    return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"


def check_database() -> CheckResult:
    result = _timed(_database)
    if not result.ok:
        # A connection that failed mid-check must not be handed to the next request.
        connection.close_if_unusable_or_obsolete()
    return result


def check_redis() -> CheckResult:
    return _timed(_redis)


def check_kafka(timeout: float = KAFKA_TIMEOUT_SECONDS) -> CheckResult:
    return _timed(lambda: _kafka(timeout))


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "redis": check_redis,
    "kafka": check_kafka,
}


def check_all(names: list[str] | None = None) -> dict[str, CheckResult]:
    return {name: CHECKS[name]() for name in names or CHECKS}


def check_for_command(command: BaseCommand, names: list[str], failure: str) -> None:
    """A command's `--check`: one line per part, then CommandError(`failure`) if any is down."""
    results = check_all(names)
    for name, result in results.items():
        state = "ok" if result.ok else "DOWN"
        command.stdout.write(f"{name}: {state} ({result.detail}, {result.latency_ms} ms)")
    if not all(result.ok for result in results.values()):
        raise CommandError(failure)


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Each part's state (`?check=database` narrows it). Error text stays in the log: it may
    name hosts and users."""
    names = request.GET.getlist("check")
    if unknown := sorted(set(names) - set(CHECKS)):
        return JsonResponse(
            {"error": f"unknown check {unknown}; known: {list(CHECKS)}"}, status=400
        )
    results = check_all(names)
    for name, result in results.items():
        if not result.ok:
            logger.warning("readiness: %s down: %s", name, result.detail)
    ready = all(result.ok for result in results.values())
    body = {
        "status": "ok" if ready else "unavailable",
        "checks": {
            name: {
                "ok": result.ok,
                "latency_ms": result.latency_ms,
                **({} if result.ok else {"error": result.detail.split(":", 1)[0]}),
            }
            for name, result in results.items()
        },
    }
    return JsonResponse(body, status=200 if ready else 503)
