"""ASGI entry point: uvicorn serves the admin, the API, the dashboard and its live stream."""

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# uvicorn serves no files itself: this serves /static/ (the admin's and the API docs' assets)
# straight from the installed apps, and hands every other request to Django unchanged.
application = ASGIStaticFilesHandler(get_asgi_application())
