"""A warning for an event that repeats (every request, stream or reconnect of an outage),
logged in a few lines instead of one per repeat."""

from __future__ import annotations

import logging
import threading
import time


class RepeatedWarning:
    """Logs the first occurrence at once; later ones are only counted until `every` seconds
    have passed, and the next one is logged with that count (so the count of the last few
    seconds of an outage is not told if nothing repeats after them). Thread-safe."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._logged_at: float | None = None
        self._repeats = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            logged_at = self._logged_at
            if logged_at is not None and now - logged_at < self.every:
                self._repeats += 1
                return
            repeats, self._repeats, self._logged_at = self._repeats, 0, now
        if repeats:
            elapsed = now - logged_at
            more = f" ({repeats} more like it in the {elapsed:.0f} s before)"
            self.logger.warning(message + more, *args)
        else:
            self.logger.warning(message, *args)
