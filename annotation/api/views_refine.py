"""Click-to-refine for the draw screens: the reader's current mask, clicks and lung zones in,
the mask the click-to-refine network makes of them out (annotation.services.interactive).

Same access rules as the drawing endpoint: the case must be in your queue and still yours to
decide (a senior MD's adjudication too). Nothing about the candidates goes in or comes out.
400: bad clicks, zones or mask; 409: the case is decided; 503: no click-to-refine model for
this dataset, or no worker answered in time (the message says which).
"""

from __future__ import annotations

import base64
import binascii

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from annotation.api.fields import StrictCharField, StrictIntegerField
from annotation.api.schema import ErrorDetail
from annotation.api.views_review import CONFLICT, NOT_YOURS, ReviewView, held
from annotation.middleware import body_limit
from annotation.models import ReviewTask
from annotation.services.decisions import DRAWING_MAX_BYTES
from annotation.services.interactive import RefineInputError, interactive_refine
from annotation.services.review_errors import InvalidChoice

DATA_URL = "data:image/png;base64,"


class ClickIn(serializers.Serializer):
    x = StrictIntegerField(min_value=0, max_value=65535, help_text="column, working-image pixels")
    y = StrictIntegerField(min_value=0, max_value=65535, help_text="row, working-image pixels")
    positive = serializers.BooleanField(help_text="true: infection here; false: none here")


class RefineIn(serializers.Serializer):
    mask = StrictCharField(
        allow_null=True,
        max_length=2 * DRAWING_MAX_BYTES,
        help_text="the current mask as a PNG data URL at the working resolution; null: blank",
    )
    clicks = ClickIn(many=True, help_text="every click so far, in order")
    zones = serializers.ListField(
        child=StrictCharField(max_length=20),
        default=list,
        max_length=6,
        help_text="lung zones: right_upper, right_middle, right_lower, left_upper, …",
    )


class RefineOut(serializers.Serializer):
    mask = serializers.CharField(help_text="the refined mask, PNG data URL, working resolution")
    model_version = StrictIntegerField(help_text="the click-to-refine model that made it")
    ms = serializers.FloatField(help_text="time the server took")


def _png(data_url: str | None) -> bytes | None:
    if data_url is None:
        return None
    if not data_url.startswith(DATA_URL):
        raise RefineInputError(f"mask must be a PNG data URL ({DATA_URL}…) or null")
    try:
        return base64.b64decode(data_url.removeprefix(DATA_URL), validate=True)
    except (binascii.Error, ValueError):
        raise RefineInputError("mask is not valid base64") from None


@body_limit(3 * DRAWING_MAX_BYTES)
class RefineView(ReviewView):
    """Refine your mask of this case from your clicks (positive, negative) and lung zones."""

    @extend_schema(
        request=RefineIn,
        responses={
            200: RefineOut,
            404: NOT_YOURS,
            409: CONFLICT,
            503: OpenApiResponse(response=ErrorDetail, description="no model or no worker"),
        },
    )
    def post(self, request, token: str):
        task = held(request, token)
        given = RefineIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        if task.status != ReviewTask.Status.LEASED:
            raise InvalidChoice("this case is decided: there is nothing left to refine")
        refined = interactive_refine(
            task=task,
            mask_png=_png(data["mask"]),
            clicks=[dict(c) for c in data["clicks"]],
            zones=list(data["zones"]),
        )
        return Response(
            {
                "mask": DATA_URL + base64.b64encode(refined.png).decode(),
                "model_version": refined.model_version,
                "ms": refined.ms,
            }
        )
