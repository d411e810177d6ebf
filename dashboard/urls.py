"""Dashboard pages and their live stream (mounted at /)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import pages, views

app_name = "dashboard"

urlpatterns = [
    path("", pages.dashboard_page, name="page"),
    path("counts.json", pages.counts_table, name="table"),
    path("counts/<uuid:count_id>/", pages.count_page, name="count"),
    path("stream/", views.dashboard_stream, name="stream"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="dashboard/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
