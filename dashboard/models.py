"""The dashboard has no tables of its own: this model only holds its view permission."""

from django.db import models


class Dashboard(models.Model):
    """Grant `dashboard.view_dashboard` to let a user who is not staff see the dashboard."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_dashboard", "Can view the dashboard and its live stream")]

    def __str__(self) -> str:
        return "dashboard"
