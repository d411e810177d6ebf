"""The ASGI entry point: the live stream goes to Django's ASGI handler, entered in one
thread hop; every other request runs as WSGI in the worker's thread pool, in no hop of
asgiref's at all (each hop from the event loop to a thread costs more than a request's
work)."""

from __future__ import annotations

import asyncio

from asgiref.sync import SyncToAsync

from config.asgi import application


async def get(path: str, headers: list[tuple[bytes, bytes]] = ()) -> list[dict]:
    """Send one GET through the ASGI app; what it sent back, up to the response's start."""
    sent: list[dict] = []
    started = asyncio.Event()
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects first

    async def send(message: dict) -> None:
        sent.append(message)
        started.set()

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
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    serving = asyncio.ensure_future(application(scope, receive, send))
    await asyncio.wait_for(started.wait(), 10)
    if path != "/stream/":
        await asyncio.wait_for(serving, 10)
    serving.cancel()
    return sent


def count_hops(monkeypatch) -> list[str]:
    hops: list[str] = []
    original = SyncToAsync.__call__

    def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counted)
    return hops


def test_a_request_runs_as_wsgi_in_the_thread_pool(monkeypatch):
    hops = count_hops(monkeypatch)
    sent = asyncio.run(get("/healthz"))

    assert sent[0]["status"] == 200
    assert hops == []


def test_the_stream_is_served_by_the_asgi_handler_in_few_hops(monkeypatch):
    hops = count_hops(monkeypatch)
    sent = asyncio.run(get("/stream/"))

    assert sent[0]["status"] == 401  # anonymous: the stream needs a login, by ASGI all the same
    # request_started's receivers, the middleware chain with the view, then the database
    # release and the response's close: never one hop per middleware.
    assert "BaseHandler.get_response" in hops
    assert len(hops) <= 4, hops
