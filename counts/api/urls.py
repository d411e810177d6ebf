"""REST API routes for counts (mounted under /api/)."""

urlpatterns: list = []
