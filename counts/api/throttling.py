"""Per-user throttling of writes; reads are never throttled."""

import logging

from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

logger = logging.getLogger(__name__)


class WriteRateThrottle(UserRateThrottle):
    """The "writes" rate (setting API_WRITE_THROTTLE) per user, for unsafe methods only.

    Its counters live in Redis; if Redis is down, writes are let through rather than failed,
    since they need only PostgreSQL.
    """

    scope = "writes"

    def get_rate(self) -> str:
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]  # read late: settings can change

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        try:
            return super().allow_request(request, view)
        except (ConnectionInterrupted, RedisError) as exc:
            logger.warning("write throttle unavailable, allowing the request: %s", exc)
            return True
