"""ASGI entry point for uvicorn: the live stream as ASGI, every other request as WSGI.

The live stream (/stream/) is an async view: thousands stay open at once, and an idle one
costs the event loop nothing (dashboard/live.py). Everything else (the API, the admin, the
pages, /healthz) is sync Django, which Django's ASGI handler runs in a thread it starts for
each request and reaches in several hops from the event loop. Here each such request goes
to a fixed pool of WEB_THREADS threads running Django's WSGI handler, in one hop
(config/wsgi_pool.py): more than twice the requests per second on the same cores
(docs/benchmarks.md). uvicorn still parses HTTP, and its graceful shutdown still ends open
streams within its timeout.
"""

import os

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse

from config.wsgi_pool import WSGIPool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain run in one thread hop per request.

    Under Django's own ASGI handler every middleware's process_request and process_response
    is a hop of its own from the event loop to the request's thread and back
    (`MiddlewareMixin.__acall__`). Here the chain is built in sync mode, as under WSGI, and
    entered once. The stream's async view still runs on the event loop, and its body is
    sent from there: no thread waits on an open stream.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


class StreamOrWSGI:
    """Send the live stream (and ASGI's lifespan messages) to Django's ASGI handler and
    every other HTTP request to its WSGI handler in a thread pool."""

    def __init__(self) -> None:
        self.stream_path = reverse("dashboard:stream")
        self.asgi = OneHopASGIHandler()
        # uvicorn serves no files itself: /static/ (the admin's and the API docs' assets)
        # is served straight from the installed apps.
        self.wsgi = WSGIPool(
            StaticFilesHandler(WSGIHandler()),
            threads=settings.WEB_THREADS,
            queue_timeout=settings.WEB_QUEUE_TIMEOUT,
            read_body=self.asgi.read_body,
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != self.stream_path:
            await self.wsgi(scope, receive, send)
        else:
            await self.asgi(scope, receive, send)


django.setup(set_prefix=False)
application = StreamOrWSGI()
