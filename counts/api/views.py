"""Thin REST views: validate input, call a service or a cached selector, shape the output.

Reads go through the generation-checked cache of counts.cache, which the consumer
invalidates when a count's events arrive; writes go straight to the services, and
invalidate their count once committed too, so a client reads its own writes at once.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from counts import selectors, services
from counts.api.conditional import (
    IF_MATCH_PARAMETER,
    etag,
    etag_parameter,
    if_match_versions,
)
from counts.api.filters import CountFilter
from counts.api.idempotency import KEY_PARAMETER, idempotent, replayed_parameter
from counts.api.schema import (
    LIST_PARAMETERS,
    LOCATION,
    RETRY_AFTER,
    count_responses,
    responses,
)
from counts.api.serializers import (
    CountCreateInput,
    CountIncrementInput,
    CountOutput,
    CountSetInput,
    CountUpdateInput,
)
from counts.api.throttling import WriteRateThrottle
from counts.cache import (
    count_generation_key,
    count_key,
    invalidate_on_commit,
    list_generation_key,
    list_key,
    read_through,
)
from counts.models import INT64_MAX, Count, parse_count_id

COUNT_ID = OpenApiParameter("count_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


class CountPagination(LimitOffsetPagination):
    max_limit = 500

    def paginate_queryset(self, queryset, request, view=None):
        # DRF silently falls back to defaults on a bad limit/offset; we refuse them instead.
        # A limit over max_limit is capped; an offset must fit PostgreSQL's bigint OFFSET.
        bounds = ((self.limit_query_param, 1, None), (self.offset_query_param, 0, INT64_MAX))
        for param, minimum, maximum in bounds:
            raw = request.query_params.get(param)
            if raw is not None and not (
                raw.isascii() and raw.isdigit() and minimum <= int(raw) <= (maximum or int(raw))
            ):
                message = f"An integer of at least {minimum}" + (
                    f" and at most {maximum}." if maximum else "."
                )
                raise serializers.ValidationError({param: [message]})
        return super().paginate_queryset(queryset, request, view)


class CountsApiMixin:
    # JSON bodies only, so a value's type is the one the client sent; writes are throttled.
    parser_classes = [JSONParser]
    throttle_classes = [WriteRateThrottle]


def _validated(input_class: type[serializers.Serializer], request: Request) -> dict:
    serializer = input_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _count_response(
    count: Count, status_code: int = status.HTTP_200_OK, headers: dict | None = None
) -> Response:
    headers = {"ETag": etag(count.version), **(headers or {})}
    return Response(CountOutput(count).data, status=status_code, headers=headers)


@extend_schema_view(
    get=extend_schema(
        parameters=[*LIST_PARAMETERS, RETRY_AFTER],
        responses=responses({200: CountOutput(many=True)}, 400, 401, 503),
    )
)
class CountListCreateApi(CountsApiMixin, generics.ListAPIView):
    """List counts (paginated, filterable; served from the cache) or create one."""

    serializer_class = CountOutput
    filter_backends = [DjangoFilterBackend]
    filterset_class = CountFilter
    pagination_class = CountPagination

    def get_queryset(self):
        return selectors.count_list()

    def list(self, request: Request, *args, **kwargs) -> Response:
        key = list_key(self._canonical_url(request))
        return Response(read_through(key, list_generation_key(), self._load_page))

    def _load_page(self) -> dict:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data).data

    @staticmethod
    def _canonical_url(request: Request) -> str:
        """One cache key per distinct page: known parameters only, in a fixed order.

        Unknown parameters are refused, so a typo never silently returns an unfiltered page.
        """
        known = {*CountFilter.base_filters, "limit", "offset", "format"}
        if unknown := sorted(set(request.query_params) - known):
            raise serializers.ValidationError({name: ["Unknown parameter."] for name in unknown})
        params = sorted(request.query_params.lists())
        query = urlencode([(name, value) for name, values in params for value in values])
        return f"{request.build_absolute_uri(request.path)}?{query}"

    @extend_schema(
        request=CountCreateInput,
        parameters=[
            KEY_PARAMETER,
            LOCATION,
            etag_parameter([201]),
            replayed_parameter([201]),
            RETRY_AFTER,
        ],
        responses=count_responses(201, 400, 401, 403, 409, 415, 422, 429, 503),
    )
    @idempotent
    def post(self, request: Request) -> Response:
        count = services.count_create(**_validated(CountCreateInput, request))
        invalidate_on_commit(count.id)
        location = reverse("api-count-detail", kwargs={"count_id": count.id})
        return _count_response(count, status.HTTP_201_CREATED, headers={"Location": location})


class CountDetailApi(CountsApiMixin, APIView):
    """Read a count (served from the cache), rename or re-describe it, or delete it."""

    @extend_schema(
        parameters=[COUNT_ID, etag_parameter([200]), RETRY_AFTER],
        responses=count_responses(200, 401, 404, 503),
    )
    def get(self, request: Request, count_id: str) -> Response:
        count_id = str(parse_count_id(count_id))
        data = read_through(
            count_key(count_id), count_generation_key(count_id), lambda: _load_count(count_id)
        )
        if data is None:
            raise NotFound()
        return Response(data, headers={"ETag": etag(data["version"])})

    @extend_schema(
        request=CountUpdateInput,
        parameters=[COUNT_ID, IF_MATCH_PARAMETER, etag_parameter([200, 412]), RETRY_AFTER],
        responses=count_responses(200, 400, 401, 403, 404, 409, 412, 415, 429, 503),
    )
    def patch(self, request: Request, count_id: str) -> Response:
        versions = if_match_versions(request)
        data = _validated(CountUpdateInput, request)
        count = services.count_update_info(count_id=count_id, if_version=versions, **data)
        invalidate_on_commit(count.id)
        return _count_response(count)

    @extend_schema(
        parameters=[COUNT_ID, IF_MATCH_PARAMETER, etag_parameter([412]), RETRY_AFTER],
        responses=responses({204: None}, 401, 403, 404, 412, 429, 503),
    )
    def delete(self, request: Request, count_id: str) -> Response:
        services.count_delete(count_id=count_id, if_version=if_match_versions(request))
        invalidate_on_commit(parse_count_id(count_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _load_count(count_id: str) -> dict | None:
    try:
        return CountOutput(selectors.count_get(count_id=count_id)).data
    except Count.DoesNotExist:
        return None


class CountIncrementApi(CountsApiMixin, APIView):
    """Add a delta (default 1, may be negative) to a count's value, atomically."""

    @extend_schema(
        request=CountIncrementInput,
        parameters=[
            COUNT_ID,
            KEY_PARAMETER,
            etag_parameter([200]),
            replayed_parameter([200]),
            RETRY_AFTER,
        ],
        responses=count_responses(200, 400, 401, 403, 404, 409, 415, 422, 429, 503),
    )
    @idempotent
    def post(self, request: Request, count_id: str) -> Response:
        data = _validated(CountIncrementInput, request)
        count = services.count_increment(count_id=count_id, **data)
        invalidate_on_commit(count.id)
        return _count_response(count)


class CountSetApi(CountsApiMixin, APIView):
    """Set a count's value."""

    @extend_schema(
        request=CountSetInput,
        parameters=[
            COUNT_ID,
            KEY_PARAMETER,
            IF_MATCH_PARAMETER,
            etag_parameter([200, 412]),
            replayed_parameter([200]),
            RETRY_AFTER,
        ],
        responses=count_responses(200, 400, 401, 403, 404, 409, 412, 415, 422, 429, 503),
    )
    @idempotent
    def post(self, request: Request, count_id: str) -> Response:
        versions = if_match_versions(request)
        data = _validated(CountSetInput, request)
        count = services.count_set(count_id=count_id, if_version=versions, **data)
        invalidate_on_commit(count.id)
        return _count_response(count)
