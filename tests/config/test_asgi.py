"""The ASGI entry point: the live stream goes to Django's ASGI handler, entered in one
thread hop; every other request runs as WSGI in the worker's thread pool, in no hop of
asgiref's at all (each hop from the event loop to a thread costs more than a request's
work)."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
from asgiref.sync import SyncToAsync

from config import wsgi_pool
from config.asgi import application


async def get(path: str) -> list[dict]:
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
        "headers": [(b"host", b"127.0.0.1")],
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


def test_the_wsgi_environ_of_an_asgi_request():
    scope = {
        "method": "POST",
        "http_version": "1.1",
        "scheme": "https",
        "root_path": "/app",
        "path": "/app/api/counts/ü/",
        "query_string": b"a=1&b=%C3%BC",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"2"),
            (b"accept", b"text/html"),
            (b"accept", b"application/json"),
            (b"x-forwarded-for", b"10.0.0.1"),
        ],
        "client": ("127.0.0.2", 50001),
        "server": ("example.org", 443),
    }
    body = io.BytesIO(b"{}")

    environ = wsgi_pool.environ(scope, body)

    assert environ["SCRIPT_NAME"] == "/app"
    assert environ["PATH_INFO"] == "/api/counts/ü/".encode().decode("latin1")  # PEP 3333
    assert environ["QUERY_STRING"] == "a=1&b=%C3%BC"
    assert (environ["CONTENT_TYPE"], environ["CONTENT_LENGTH"]) == ("application/json", "2")
    assert environ["HTTP_ACCEPT"] == "text/html,application/json"
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert (environ["REMOTE_ADDR"], environ["SERVER_NAME"], environ["SERVER_PORT"]) == (
        "127.0.0.2",
        "example.org",
        "443",
    )
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["wsgi.input"] is body


def request(method: str, path: str, **kwargs) -> httpx.Response:
    """One whole request through the ASGI app, as an HTTP client sees it."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            return await web.request(method, path, **kwargs)

    return asyncio.run(send())


def test_a_page_comes_back_whole_with_every_header_and_cookie():
    response = request("GET", "/admin/login/")

    assert response.status_code == 200
    assert b"</html>" in response.content
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "csrftoken" in response.cookies
    assert response.headers["x-frame-options"] == "DENY"


def test_a_request_body_reaches_django():
    """An anonymous POST with a body: the CSRF check reads the form and refuses it."""
    response = request("POST", "/admin/login/", data={"username": "a", "password": "b"})

    assert response.status_code == 403
    assert b"CSRF" in response.content


def test_a_client_gone_before_its_body_arrived_gets_no_answer():
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/counts/", "headers": []}
    asyncio.run(application(scope, receive, send))

    assert sent == []


def one_slow_thread(seconds: float, queue_timeout: float) -> tuple[wsgi_pool.WSGIPool, list]:
    """A pool of one thread whose app takes `seconds`; the paths it ran, in order."""
    ran: list[str] = []

    def slow(environ: dict, start_response) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        time.sleep(seconds)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    read_body = application.asgi.read_body
    return wsgi_pool.WSGIPool(slow, 1, read_body, queue_timeout=queue_timeout), ran


async def pool_get(pool: wsgi_pool.WSGIPool, path: str) -> tuple[list[dict], float]:
    """What the pool sent for a GET of `path`, and how long it took."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
    }
    started = time.monotonic()
    await pool(scope, receive, send)
    return sent, time.monotonic() - started


def test_a_request_no_thread_started_in_time_gets_503_at_once_and_does_not_run():
    """Overload sheds load: a request still waiting for a thread after WEB_QUEUE_TIMEOUT is
    answered 503 with Retry-After then, even while every thread is stuck, and never runs."""
    pool, ran = one_slow_thread(1.0, queue_timeout=0.2)

    async def two_at_once() -> tuple[tuple[list[dict], float], tuple[list[dict], float]]:
        first = asyncio.ensure_future(pool_get(pool, "/first"))
        await asyncio.sleep(0.05)  # the first holds the only thread
        second = await pool_get(pool, "/second")
        return await first, second

    (first, _), (second, waited) = asyncio.run(two_at_once())

    assert first[0]["status"] == 200
    assert second[0]["status"] == 503
    assert waited < 0.7, f"answered after {waited:.2f} s, not at the queue timeout"
    assert (b"retry-after", b"1") in second[0]["headers"]
    assert json.loads(second[1]["body"]) == {"detail": "The server is busy; try again shortly."}
    assert ran == ["/first"]


def test_a_request_whose_client_went_away_while_it_waited_for_a_thread_never_runs():
    """The server cancels a request (a client gone, a graceful shutdown's end): one still in
    line must not run later for nobody, with its body already closed."""
    pool, ran = one_slow_thread(0.3, queue_timeout=5)

    async def cancel_the_second() -> None:
        first = asyncio.ensure_future(pool_get(pool, "/first"))
        await asyncio.sleep(0.05)  # the first holds the only thread
        second = asyncio.ensure_future(pool_get(pool, "/second"))
        await asyncio.sleep(0.05)
        second.cancel()
        await first
        await asyncio.sleep(0.1)  # a thread is free: a second left in line would run now

    asyncio.run(cancel_the_second())
    pool.executor.shutdown(wait=True)

    assert ran == ["/first"]
