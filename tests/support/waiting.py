"""Waiting for a condition, and reporting the figures a fault scenario measured."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tests.support.paths import RELIABILITY_FIGURES

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll until `predicate` returns something truthy and return it; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def report(scenario: str, **figures: Any) -> None:
    """Print a scenario's figures as one JSON line (pytest shows it with -s or on failure)
    and append it to .local/reliability-figures.jsonl, where docs/benchmarks.md's come from."""
    line = json.dumps(
        {"scenario": scenario, "at": time.strftime("%FT%TZ", time.gmtime()), **figures}
    )
    print(line, flush=True)
    RELIABILITY_FIGURES.parent.mkdir(exist_ok=True)
    with open(RELIABILITY_FIGURES, "a") as figures_file:
        figures_file.write(line + "\n")


@contextmanager
def reporting(scenario: str) -> Iterator[dict[str, Any]]:
    """Collect a scenario's figures in the dict it yields, as they are measured, and
    report them however the block ends: `"outcome": "passed"`, or `"failed"` with the
    failure and what was measured before it (a run that fails counts too)."""
    figures: dict[str, Any] = {}
    outcome: dict[str, Any] = {"outcome": "failed"}
    try:
        yield figures
        outcome["outcome"] = "passed"
    except BaseException as exc:
        first_line = (str(exc).splitlines() or [""])[0]
        outcome["failure"] = f"{type(exc).__name__}: {first_line}"
        raise
    finally:
        report(scenario, **outcome, **figures)
