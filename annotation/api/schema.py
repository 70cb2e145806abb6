"""OpenAPI schema details shared by the API views: the error responses every client meets."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorDetail = inline_serializer("ErrorDetail", fields={"detail": serializers.CharField()})
_ERRORS = {
    "401": "Not authenticated (send a session cookie or `Authorization: Token <key>`).",
    "403": "Your role does not allow this.",
    "404": "No such object.",
    "405": "Method not allowed.",
}
# What annotation.middleware answers before a body is read.
_BODY_ERRORS = {
    "411": "A body sent chunked, without Content-Length.",
    "413": "The body is larger than this operation takes.",
}


class ApiSchema(AutoSchema):
    """Documents the error answers, so clients (and schemathesis) know every status code."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        if "400" not in responses and (
            self.method in ("POST", "PUT", "PATCH") or self._has_query()
        ):
            responses["400"] = self._get_response_for_code(
                OpenApiResponse(
                    response=OpenApiTypes.OBJECT, description="Invalid input: field → messages."
                ),
                "400",
            )
        errors = dict(_ERRORS)
        if self.method in ("POST", "PUT", "PATCH"):
            errors.update(_BODY_ERRORS)
        for code, text in errors.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(response=ErrorDetail, description=text), code
                )
        return responses

    def _has_query(self) -> bool:
        # Filters, pagination and documented query parameters can all be invalid.
        return self.method == "GET" and bool(
            self._is_list_view() or self._get_filter_parameters() or self.get_override_parameters()
        )
