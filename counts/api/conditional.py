"""ETag and If-Match (RFC 9110): optimistic concurrency on a count's version.

A count's ETag is its version in quotes (`"5"`). PATCH, DELETE and `set` honour
`If-Match`: `*` (the count exists) or ETags, compared strongly: a weak `W/"5"`, or
anything that is no quoted version, matches nothing. The service compares it with the
version under the row's lock; a stale one is answered 412 with the current ETag, and
nothing is written.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.request import Request

IF_MATCH = "If-Match"
# One of our ETags, compared strongly: W/"5" (weak) does not match it.
_VERSION_TAG = re.compile(r'"([0-9]{1,20})"')

IF_MATCH_PARAMETER = OpenApiParameter(
    IF_MATCH,
    {"type": "string"},
    OpenApiParameter.HEADER,
    description="Write only if the count is still at one of these ETags (from a GET or a "
    'write, e.g. `"5"`; comma-separated), else 412 and nothing is written. `*` means any '
    "version; weak ETags and values that are no ETag of ours match nothing.",
)


def etag(version: int) -> str:
    return f'"{version}"'


def etag_parameter(codes: list[int]) -> OpenApiParameter:
    return OpenApiParameter(
        "ETag",
        {"type": "string", "pattern": '^"[0-9]+"$'},
        OpenApiParameter.HEADER,
        description="The count's version, for If-Match.",
        required=True,
        response=codes,
    )


class PreconditionFailed(APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = (
        "The count is not at the ETag in If-Match; its current ETag is in the ETag header. "
        'Read it again (ETags are quoted: "5").'
    )
    default_code = "precondition_failed"


def if_match_versions(request: Request) -> frozenset[int] | None:
    """The versions If-Match allows, or None when any will do (no header, or `*`)."""
    value = request.headers.get(IF_MATCH)
    if value is None or value.strip() == "*":
        return None
    tags = (tag.strip() for tag in value.split(","))
    return frozenset(int(m[1]) for tag in tags if (m := _VERSION_TAG.fullmatch(tag)))
