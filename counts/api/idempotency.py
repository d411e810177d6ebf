"""The Idempotency-Key header on the API's writes (counts.idempotency keeps the keys).

A POST that writes may carry `Idempotency-Key: <1-255 visible ASCII characters>`. Its
first success is stored with the key; the same request again (method, path and JSON body)
gets that answer back with `Idempotent-Replayed: true` and writes nothing. The same key
with another request (another If-Match too) is a 422. Keys are per user.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable

from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from counts import idempotency
from counts.api.conditional import IF_MATCH

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[!-~]{1,255}$"
# The headers of a first answer that its replays repeat.
STORED_HEADERS = ("Location", "ETag")

KEY_PARAMETER = OpenApiParameter(
    HEADER,
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
    OpenApiParameter.HEADER,
    description="Makes the write safe to retry: a repeat of this request with this key "
    "within IDEMPOTENCY_KEY_RETENTION_HOURS (24 h) answers as the first did and writes "
    "nothing. Any unique string per write, e.g. a UUID.",
)


def replayed_parameter(codes: list[int]) -> OpenApiParameter:
    return OpenApiParameter(
        REPLAYED_HEADER,
        {"type": "string", "enum": ["true"]},
        OpenApiParameter.HEADER,
        description="Present on a repeat with a used Idempotency-Key: the first answer, "
        "again; nothing was written.",
        response=codes,
    )


class KeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = f"This {HEADER} was already used with a different request."
    default_code = "idempotency_key_reused"


class KeyInUse(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = f"Another request with this {HEADER} is being processed; retry."
    default_code = "idempotency_key_in_use"


Handler = Callable[..., Response]


def idempotent(handler: Handler) -> Handler:
    """Wrap a view method that writes: with the header, it runs once per user and key."""

    @functools.wraps(handler)
    def handle(view, request: Request, *args, **kwargs) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return handler(view, request, *args, **kwargs)
        if not re.fullmatch(KEY_PATTERN, key):
            raise ValidationError({HEADER: ["1 to 255 visible ASCII characters."]})
        fingerprint = _fingerprint(request)  # parses the body: bad JSON fails before the claim

        def write() -> idempotency.Answer:
            response = handler(view, request, *args, **kwargs)
            headers = {name: response[name] for name in STORED_HEADERS if name in response}
            return idempotency.Answer(response.status_code, response.data, headers)

        try:
            answer, replayed = idempotency.run_once(
                user_id=request.user.pk, key=key, fingerprint=fingerprint, write=write
            )
        except idempotency.KeyReused:
            raise KeyReused() from None
        except idempotency.KeyInUse:
            raise KeyInUse() from None
        headers = {**answer.headers, **({REPLAYED_HEADER: "true"} if replayed else {})}
        return Response(answer.body, status=answer.status, headers=headers)

    return handle


def _fingerprint(request: Request) -> str:
    """The request as its replays must repeat it: method, path, If-Match and JSON body."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"))
    condition = request.headers.get(IF_MATCH, "")
    text = f"{request.method} {request.path}\n{condition}\n{body}"
    return hashlib.sha256(text.encode()).hexdigest()
