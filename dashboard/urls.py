"""Dashboard page and its live stream (mounted at /)."""

urlpatterns: list = []
