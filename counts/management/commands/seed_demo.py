import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from counts.models import Count
from counts.services import count_create

DEMO_COUNTS = [
    ("page-views", "Views of the landing page", 1200),
    ("signups", "Accounts created", 42),
    ("orders", "Orders placed", 7),
    ("errors", "Errors reported by clients", 0),
]


class Command(BaseCommand):
    help = "Create a few demo counts and an admin user (both only when missing)."

    def handle(self, *args, **options):
        for name, description, value in DEMO_COUNTS:
            if not Count.objects.filter(name=name).exists():
                count_create(name=name, description=description, value=value)
                self.stdout.write(f"created demo count {name!r}")
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password = os.environ.get("ADMIN_PASSWORD", "admin")
        user_model = get_user_model()
        if not user_model.objects.filter(username=username).exists():
            user_model.objects.create_superuser(username, f"{username}@localhost", password)
            self.stdout.write(f"created admin user {username!r}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Log in at http://127.0.0.1:8000/admin/ as {username!r} "
                f"(password {password!r} unless ADMIN_PASSWORD was set before)."
            )
        )
