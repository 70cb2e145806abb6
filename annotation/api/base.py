"""What every API view shares: authentication, role check, pagination, schema."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import AuthenticationFailed, NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.api.authentication import ExpiringTokenAuthentication
from annotation.api.fields import StrictCharField
from annotation.api.permissions import IsResearchReader
from annotation.api.schema import ApiSchema, ErrorDetail

MAX_ID = 2**63 - 1  # the largest primary key: larger ids are refused, not sent to the database


class Pagination(PageNumberPagination):
    """Page numbers. A page or page_size that is not a whole number (page_size from 1 to 500)
    is refused; DRF would silently fall back to the first page or the default size."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {self.page_size_query_param: [f"a whole number from 1 to {self.max_page_size}"]}
            )
        return size

    def get_page_number(self, request, paginator) -> int | str:
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and not raw.isdigit():
            raise ValidationError({self.page_query_param: ["a page number: 1, 2, 3 …"]})
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
            elif parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters


class ApiView:
    """Mixin for API views. Token first, so an anonymous call is answered 401, not 403."""

    authentication_classes = [ExpiringTokenAuthentication, SessionAuthentication]
    permission_classes = [IsResearchReader]
    lookup_value_regex = r"[0-9]+"  # ids only; anything else is the JSON 404 of not_found
    pagination_class = Pagination
    schema = ApiSchema()


class TokenRequest(serializers.Serializer):
    username = StrictCharField(min_length=1, max_length=150)
    password = StrictCharField(min_length=1, max_length=4096, trim_whitespace=False)


class TokenAnswer(serializers.Serializer):
    token = serializers.CharField()


class TokenView(APIView):
    """POST username and password, get the API token (`Authorization: Token <key>`), valid for
    TOKEN_TTL from when it was issued; DELETE with the token revokes it. Wrong passwords are
    counted with the login form's (django-axes): too many in a row lock the user name out."""

    authentication_classes = [ExpiringTokenAuthentication]  # a refusal is a 401 with its header
    parser_classes = [JSONParser, FormParser]
    schema = ApiSchema()

    def get_permissions(self):
        return [IsAuthenticated()] if self.request.method == "DELETE" else [AllowAny()]

    @extend_schema(
        request=TokenRequest,
        responses={
            200: TokenAnswer,
            429: OpenApiResponse(
                response=ErrorDetail,
                description="too many wrong passwords in a row: locked out for a while",
            ),
        },
    )
    def post(self, request):
        given = TokenRequest(data=request.data)
        given.is_valid(raise_exception=True)
        user = authenticate(request._request, **given.validated_data)
        if user is None or not user.is_active:
            raise AuthenticationFailed("unable to log in with these credentials")
        with transaction.atomic():
            token, _ = Token.objects.select_for_update().get_or_create(user=user)
            if token.created < timezone.now() - settings.TOKEN_TTL:
                # An expired token is replaced by a new key, never revived.
                token.delete()
                token = Token.objects.create(user=user)
        return Response({"token": token.key})

    @extend_schema(request=None, responses={204: OpenApiResponse(description="revoked")})
    def delete(self, request):
        Token.objects.filter(pk=request.auth.pk).delete()
        return HttpResponse(status=204)


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@authentication_classes([])
@permission_classes([])
def not_found(request, path: str = ""):
    """Any other /api/ URL: a JSON 404, like the API's own, not the site's HTML page."""
    raise NotFound(f"no API endpoint at /api/{path}")
