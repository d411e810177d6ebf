"""The dashboard's live stream (Server-Sent Events, served under ASGI)."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.views.decorators.http import require_GET

from dashboard.access import viewer_required
from dashboard.live import current_hub

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


@viewer_required(login_redirect=False)
@require_GET
async def dashboard_stream(request: HttpRequest) -> HttpResponse:
    """Refreshes as they happen. On reconnect the browser sends Last-Event-ID and gets
    exactly the refreshes it missed; the first connection names the page's snapshot.
    Every open stream of a process is served by that process's hub (dashboard/live.py)."""
    last_id = request.headers.get("Last-Event-ID") or request.GET.get("last_id", "$")
    if last_id != "$" and not _STREAM_ID.match(last_id):
        return HttpResponseBadRequest("Last-Event-ID must be a stream id like 1764165600123-0")
    events = current_hub().stream(last_id)
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not hold events back
    return response
