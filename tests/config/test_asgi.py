"""The ASGI entry point enters the middleware chain once per request, not once per
middleware: each hop from the event loop to a thread costs more than a request's work."""

from __future__ import annotations

import asyncio

from asgiref.sync import SyncToAsync

from config.asgi import application


async def get(path: str) -> list[dict]:
    sent: list[dict] = []
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects first

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await application(scope, receive, send)
    return sent


def test_a_request_takes_three_thread_hops_whatever_the_middleware(monkeypatch):
    hops: list[str] = []
    original = SyncToAsync.__call__

    def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    sent = asyncio.run(get("/healthz"))

    assert sent[0]["status"] == 200
    # request_started's receivers, the middleware chain with the view, request_finished's.
    assert len(hops) == 3, hops
