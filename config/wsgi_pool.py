"""Django's WSGI handler served to an ASGI server from a pool of threads, one hop a request.

For everything but the live stream (config/asgi.py). The request's body is read on the
event loop first, as Django's own ASGI handler reads it; then one thread of the pool runs
the whole request through Django's WSGI handler and hands back the complete response,
which the event loop sends. A thread never waits on the event loop. A request no thread has
started within its queue timeout is answered 503 with Retry-After without running: under
overload the line stays short, and no client waits in it without bound. (a2wsgi and
asgiref's WsgiToAsgi stream a response from the thread, each part a round trip to the event loop and
back that the thread waits for: on two busy cores a2wsgi served 40 % fewer writes and about
half the reads, docs/benchmarks.md.) So a response is held in memory whole: fine for pages,
API answers and the admin's static files; one that must stream (the live stream) is ASGI.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from django.core.exceptions import RequestAborted
from prometheus_client import Counter

from infra.database import RETRY_AFTER_SECONDS
from infra.logs import RepeatedWarning

logger = logging.getLogger(__name__)

BodyReader = Callable[[Callable], Awaitable[IO[bytes]]]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]

BUSY: Response = (
    503,
    [(b"content-type", b"application/json"), (b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
    b'{"detail":"The server is busy; try again shortly."}',
)
# Registered with the web's metrics (config/metrics.py).
REQUESTS_SHED = Counter(
    "countstream_http_requests_shed",
    "Requests answered 503 unrun: they waited over WEB_QUEUE_TIMEOUT for a thread",
    registry=None,
)


class WSGIPool:
    """An ASGI app (HTTP only) that runs the WSGI app `wsgi` on `threads` threads.

    `read_body` is Django's `ASGIHandler.read_body`: the body in memory up to
    FILE_UPLOAD_MAX_MEMORY_SIZE, then on disk; RequestAborted if the client went away.
    A request no thread has started within `queue_timeout` seconds gets BUSY, unrun.
    """

    def __init__(
        self, wsgi: Callable, threads: int, read_body: BodyReader, queue_timeout: float
    ) -> None:
        self.wsgi = wsgi
        self.read_body = read_body
        self.queue_timeout = queue_timeout
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="wsgi")
        self._shed_warning = RepeatedWarning(logger)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            body = await self.read_body(receive)
        except RequestAborted:  # the client went away before its body arrived
            return
        with body:
            status, headers, content = await self._run(environ(scope, body))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _run(self, wsgi_environ: dict) -> Response:
        """The response from a thread, or BUSY if none had started the request within the
        queue timeout (a request a thread has started always runs to its end)."""
        work = self.executor.submit(self._respond, wsgi_environ)
        answer = asyncio.wrap_future(work)
        try:
            done, _ = await asyncio.wait([answer], timeout=self.queue_timeout)
        except asyncio.CancelledError:  # the client went away: still in line, it never runs
            work.cancel()
            raise
        if done or not work.cancel():  # answered, or running already: its answer counts
            return await answer
        REQUESTS_SHED.inc()
        self._shed_warning.warning(
            "web: a request waited over %gs for a thread; answered 503", self.queue_timeout
        )
        return BUSY

    def _respond(self, wsgi_environ: dict) -> Response:
        started: list = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            started[:] = [int(status.split(" ", 1)[0]), headers]
            return lambda data: None  # the legacy write(): Django never calls it

        parts = self.wsgi(wsgi_environ, start_response)
        try:
            content = b"".join(parts)
        finally:
            if hasattr(parts, "close"):
                parts.close()  # Django's request_finished: the database connection goes back
        status, headers = started
        encoded = [(name.lower().encode("latin1"), v.encode("latin1")) for name, v in headers]
        return status, encoded, content


def environ(scope: dict, body: IO[bytes]) -> dict:
    """The PEP 3333 environ of an ASGI HTTP request (its body already read into `body`)."""
    script_name = scope.get("root_path", "").encode().decode("latin1")
    path = scope["path"].encode().decode("latin1")
    server_name, server_port = scope.get("server") or ("localhost", 80)
    result = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path.removeprefix(script_name),
        "QUERY_STRING": scope["query_string"].decode("latin1"),
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(server_port or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client := scope.get("client"):
        result["REMOTE_ADDR"], result["REMOTE_PORT"] = client[0], str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin1").upper().replace("-", "_")
        if name not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            name = f"HTTP_{name}"
        value = raw_value.decode("latin1")
        result[name] = f"{result[name]},{value}" if name in result else value
    return result
