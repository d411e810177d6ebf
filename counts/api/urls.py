"""REST API routes for counts (mounted under /api/)."""

from django.urls import path

from counts.api import views

urlpatterns = [
    path("counts/", views.CountListCreateApi.as_view(), name="api-count-list"),
    path("counts/<str:count_id>/", views.CountDetailApi.as_view(), name="api-count-detail"),
    path(
        "counts/<str:count_id>/increment/",
        views.CountIncrementApi.as_view(),
        name="api-count-increment",
    ),
    path("counts/<str:count_id>/set/", views.CountSetApi.as_view(), name="api-count-set"),
]
