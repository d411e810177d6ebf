"""Who may see the dashboard: staff, holders of `dashboard.view_dashboard`, or everyone when
DASHBOARD_PUBLIC is on. Pages send anonymous users to the login form; the live stream and
the JSON endpoints answer 401 (anonymous) or 403 (logged in, without the permission)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from inspect import iscoroutinefunction

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.db import connections
from django.http import HttpRequest, HttpResponse

VIEW_PERMISSION = "dashboard.view_dashboard"


def may_view(user) -> bool:
    if settings.DASHBOARD_PUBLIC:
        return True
    return user.is_active and (user.is_staff or user.has_perm(VIEW_PERMISSION))


def _refusal(request: HttpRequest, user, *, login_redirect: bool) -> HttpResponse:
    if user.is_authenticated:
        return HttpResponse("You may not view the dashboard.", status=403)
    if login_redirect:
        return redirect_to_login(request.get_full_path())
    response = HttpResponse("Log in to view the dashboard.", status=401)
    response["WWW-Authenticate"] = 'Session realm="countstream dashboard"'
    return response


def _may_view_then_release(user) -> bool:
    """may_view(), for a live stream: it stays open for hours, so it must not keep the
    connection its check used (inside a test's transaction the connection is the test's,
    and stays)."""
    allowed = may_view(user)
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()
    return allowed


def viewer_required(view: Callable | None = None, *, login_redirect: bool = True) -> Callable:
    """Let only dashboard viewers through; works on sync and async views."""

    def decorate(view: Callable) -> Callable:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
                user = await request.auser()
                allowed = await sync_to_async(_may_view_then_release)(user)
                if not allowed:
                    return _refusal(request, user, login_redirect=login_redirect)
                return await view(request, *args, **kwargs)

            return async_wrapper

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not may_view(request.user):
                return _refusal(request, request.user, login_redirect=login_redirect)
            return view(request, *args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate
