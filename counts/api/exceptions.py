"""Domain errors as API errors: services raise Django's exceptions, clients get 400, 404 and
409 (and 503 with Retry-After while the database is unreachable or its pool has no
connection free in time)."""

from __future__ import annotations

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from counts import services
from counts.api.conditional import PreconditionFailed, etag
from infra.database import RETRY_AFTER_SECONDS, UNAVAILABLE, log_unavailable


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "The request conflicts with the count's current state."
    default_code = "conflict"


class DatabaseUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "The database is busy or unavailable; try again shortly."
    default_code = "database_unavailable"
    wait = RETRY_AFTER_SECONDS  # DRF's handler turns it into Retry-After


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
    elif isinstance(exc, UNAVAILABLE):
        # A lost, refused or busy connection is an outage, not a bug: the client may retry.
        log_unavailable(exc)
        exc = DatabaseUnavailable()
    return drf_exception_handler(exc, context)


def _field_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return exc.message_dict
    return {api_settings.NON_FIELD_ERRORS_KEY: exc.messages}
