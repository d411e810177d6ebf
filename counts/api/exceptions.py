"""Domain errors as API errors: services raise Django's exceptions, clients get 400, 404 and
409 (and 503 while the database is unreachable)."""

from __future__ import annotations

import logging

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import exceptions
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from counts import services
from counts.api.conditional import PreconditionFailed, etag

logger = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "The request conflicts with the count's current state."
    default_code = "conflict"


class DatabaseUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "The database is unavailable; try again shortly."
    default_code = "database_unavailable"


def exception_handler(exc: Exception, context: dict):
    if isinstance(exc, services.StaleVersion):
        response = drf_exception_handler(PreconditionFailed(), context)
        response["ETag"] = etag(exc.version)
        return response
    if isinstance(exc, services.Conflict):
        exc = Conflict(detail=_field_errors(exc))
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=_field_errors(exc))
    elif isinstance(exc, ObjectDoesNotExist):
        exc = exceptions.NotFound()
    elif isinstance(exc, OperationalError | InterfaceError):
        # A lost or refused connection is an outage, not a bug: the client may retry.
        logger.warning("database unavailable: %s", exc)
        exc = DatabaseUnavailable()
    return drf_exception_handler(exc, context)


def _field_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return exc.message_dict
    return {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
