"""Token authentication that remembers what it found, briefly, in each process."""

from __future__ import annotations

import time

from django.conf import settings
from rest_framework.authentication import TokenAuthentication

# The most tokens a process remembers; when full, it forgets them all and starts again.
MAX_REMEMBERED = 10_000


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>`, each valid key's user remembered for
    API_TOKEN_CACHE_SECONDS in the process, so a busy client costs no query per request.

    The price, documented in docs/api.md: a token deleted, or a user deactivated, keeps
    working for at most that long in a process that had just seen it. Unknown and invalid
    keys are never remembered. Set API_TOKEN_CACHE_SECONDS=0 to look every key up.
    """

    _remembered: dict[str, tuple[float, object, object]] = {}  # key -> (until, user, token)

    def authenticate_credentials(self, key: str) -> tuple[object, object]:
        now = time.monotonic()
        remembered = self._remembered.get(key)
        if remembered is not None and remembered[0] > now:
            return remembered[1], remembered[2]
        user, token = super().authenticate_credentials(key)  # raises for unknown or inactive
        if (seconds := settings.API_TOKEN_CACHE_SECONDS) > 0:
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[key] = (now + seconds, user, token)
        return user, token
