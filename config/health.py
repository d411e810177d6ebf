"""Web's probes: `/healthz` answers while the process runs; `/readyz` says whether
PostgreSQL, Redis and Kafka answer, each part with its state, and is 503 when any is down.

A web pod's readiness probe asks `/readyz?check=database` only: thanks to the outbox, web
serves writes while Kafka is away, and reads fall back to the database while Redis is.
The checks themselves live in infra/health.py.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from infra.health import CHECKS, check_all

logger = logging.getLogger(__name__)


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
