"""Reading the dashboard's Server-Sent Events with httpx, as a browser's EventSource does."""

from __future__ import annotations

from collections.abc import Iterator

import httpx


def server_sent_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Each event of a streamed response as its fields (`event`, `data`, `id`), in order."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = value
