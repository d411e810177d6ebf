"""The dashboard's pages: the overview, a count's own page, and the table's JSON pages."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.access import viewer_required
from dashboard.selectors import count_detail, counts_page, dashboard_state

MAX_QUERY_LENGTH = 100  # a count's name is at most 100 characters


def _table_request(request: HttpRequest) -> tuple[str, int]:
    """The search text and page number of a request; ValueError if they make no sense."""
    query = request.GET.get("q", "").strip()
    page = int(request.GET.get("page", "1"))
    if page < 1 or len(query) > MAX_QUERY_LENGTH:
        raise ValueError
    return query, page


def _bad_table_request() -> JsonResponse:
    message = f"page must be a whole number from 1, q at most {MAX_QUERY_LENGTH} characters"
    return JsonResponse({"detail": message}, status=400)


@viewer_required
@require_GET
def dashboard_page(request: HttpRequest) -> HttpResponse:
    try:
        query, page = _table_request(request)
    except ValueError:
        query, page = "", 1
    return render(request, "dashboard/index.html", {"state": dashboard_state(query, page)})


@viewer_required(login_redirect=False)
@require_GET
def counts_table(request: HttpRequest) -> JsonResponse:
    """GET counts.json?q=<name prefix>&page=<n>: one page of the counts table."""
    try:
        query, page = _table_request(request)
    except ValueError:
        return _bad_table_request()
    return JsonResponse(counts_page(query, page))


@viewer_required
@require_GET
def count_page(request: HttpRequest, count_id: uuid.UUID) -> HttpResponse:
    detail = count_detail(str(count_id))
    if detail is None:
        raise Http404("The dashboard shows no count with this id.")
    detail["history_points"] = settings.DASHBOARD_HISTORY_POINTS
    return render(request, "dashboard/count.html", {"state": detail})
