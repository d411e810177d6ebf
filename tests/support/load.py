"""Steady background load for fault scenarios: writes or reads at a fixed rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SteadyLoad:
    """A background thread calling `action(n)` (a write, a read) at a steady rate.

    Failures are counted, not raised: "zero failed writes" is a figure the test asserts.
    """

    def __init__(self, action: Callable[[int], object], per_second: float = 50) -> None:
        self.action = action
        self.interval = 1 / per_second
        self.done = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connections

        due = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self.action(self.done + len(self.errors))
                    self.done += 1
                except Exception as exc:  # every failure is a finding, whatever its type
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                due += self.interval
                self._stop.wait(max(0.0, due - time.monotonic()))
        finally:
            connections.close_all()

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)
