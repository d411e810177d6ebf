"""Dashboard page and its live stream (mounted at /)."""

from django.urls import path

from dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard_page, name="page"),
    path("stream/", views.dashboard_stream, name="stream"),
]
