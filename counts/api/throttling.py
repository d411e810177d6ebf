"""Per-user throttling of writes; reads are never throttled."""

import logging

from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

from infra.redis import redis_client, redis_key

logger = logging.getLogger(__name__)

# A fixed window: the window's counter and the seconds it has left, in one round trip.
_COUNT_IN_WINDOW = """
local used = redis.call('INCR', KEYS[1])
local left = redis.call('TTL', KEYS[1])
if left < 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[1])
    left = tonumber(ARGV[1])
end
return {used, left}
"""


class WriteRateThrottle(UserRateThrottle):
    """The "writes" rate (setting API_WRITE_THROTTLE) per user, for unsafe methods only.

    A fixed window counted in Redis with one INCR per write: DRF's own throttle keeps a list
    of every request's time in the window and reads and rewrites all of it, two round trips
    and a pickle that grows with the rate. The price: a client may spend one window's
    allowance at its end and the next at the start of the next window.

    If Redis is down, writes are let through rather than failed, since they need only
    PostgreSQL.
    """

    scope = "writes"

    def get_rate(self) -> str:
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]  # read late: settings can change

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS or self.rate is None:
            return True
        key = redis_key(self.get_cache_key(request, view))
        try:
            used, self.seconds_left = redis_client().eval(_COUNT_IN_WINDOW, 1, key, self.duration)
        except (ConnectionInterrupted, RedisError) as exc:
            logger.warning("write throttle unavailable, allowing the request: %s", exc)
            return True
        return used <= self.num_requests

    def wait(self) -> float:
        """Seconds until the window ends (Retry-After of the 429)."""
        return max(self.seconds_left, 1)
