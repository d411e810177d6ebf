"""ASGI entry point: uvicorn serves the admin, the API, the dashboard and its live stream."""

import os

import django
from asgiref.sync import sync_to_async
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain run in one thread hop per request.

    Under Django's own ASGI handler every middleware's process_request and process_response
    is a hop of its own from the event loop to the request's thread and back
    (`MiddlewareMixin.__acall__`): a dozen hand-offs per request, which cost more CPU than
    the API's work. Here the chain is built in sync mode, as under WSGI, and entered once.
    An async view (the live stream) still runs on the event loop, and a streamed body is
    still sent from there: no thread waits on an open stream.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django.setup(set_prefix=False)
# uvicorn serves no files itself: this serves /static/ (the admin's and the API docs' assets)
# straight from the installed apps, and hands every other request to Django unchanged.
application = ASGIStaticFilesHandler(OneHopASGIHandler())
