"""Datasets, radiographs and their ground truths, with image and mask downloads.

Read-only, but for a dataset's licence, which admins set (PATCH)."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from annotation.api.base import MAX_ID, ApiView
from annotation.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
)
from annotation.api.permissions import IsAdmin
from annotation.api.serializers import (
    DatasetSerializer,
    GroundTruthSerializer,
    RadiographSerializer,
)
from annotation.models import GroundTruth, Label, Radiograph
from annotation.selectors.datasets import dataset_overview
from annotation.services.datasets import LICENCE_MAX_LENGTH, dataset_licence_set
from annotation.services.exports.qata import full_size_mask
from annotation.storage import blob_read
from cxrio.masks import mask_to_png_0_255

PNG = OpenApiResponse(response=OpenApiTypes.BINARY, description="PNG image")


class DatasetUpdateIn(serializers.Serializer):
    licence = StrictCharField(
        max_length=LICENCE_MAX_LENGTH,
        allow_blank=True,
        required=False,
        help_text="named by exports (COCO licenses, the dataset card); blank clears it",
    )


class DatasetViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Datasets with their case counts and licence."""

    serializer_class = DatasetSerializer
    parser_classes = [JSONParser]

    def get_permissions(self):
        if self.action == "partial_update":
            return [IsAdmin()]
        return super().get_permissions()

    def get_queryset(self) -> QuerySet:
        return dataset_overview()

    @extend_schema(request=DatasetUpdateIn, responses={200: DatasetSerializer})
    def partial_update(self, request, *args, **kwargs):
        """Set the dataset's licence (admins); a field left out stays as it is."""
        given = DatasetUpdateIn(data=request.data)
        given.is_valid(raise_exception=True)
        dataset = self.get_object()
        if "licence" in given.validated_data:
            dataset = dataset_licence_set(dataset=dataset, licence=given.validated_data["licence"])
        fresh = self.get_queryset().get(pk=dataset.pk)
        return Response(DatasetSerializer(fresh, context=self.get_serializer_context()).data)


class RadiographFilter(serializers.Serializer):
    dataset = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)
    label = StrictChoiceField(choices=Label.choices, required=False)
    stage = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="id of the stage that accepted the mask",
    )
    has_ground_truth = StrictBooleanField(required=False)


class RadiographViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Imported chest X-rays ("cases"), filterable by dataset, label, stage and ground truth."""

    serializer_class = RadiographSerializer

    def get_queryset(self) -> QuerySet:
        queryset = Radiograph.objects.select_related("ground_truth").order_by("id")
        if self.action != "list":
            return queryset
        query = RadiographFilter(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        wanted = query.validated_data
        if "dataset" in wanted:
            queryset = queryset.filter(dataset_id=wanted["dataset"])
        if "label" in wanted:
            queryset = queryset.filter(label=wanted["label"])
        if "stage" in wanted:
            queryset = queryset.filter(ground_truth__stage_id=wanted["stage"])
        if wanted.get("has_ground_truth") is not None:
            queryset = queryset.filter(ground_truth__isnull=not wanted["has_ground_truth"])
        return queryset

    @extend_schema(parameters=[RadiographFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={(200, "image/png"): PNG})
    @action(detail=True, methods=["get"])
    def image(self, request, pk=None):
        """The 8-bit display PNG at full resolution."""
        radiograph = self.get_object()
        return FileResponse(
            radiograph.display.open("rb"), content_type="image/png", filename=f"{pk}.png"
        )


class MaskQuery(serializers.Serializer):
    resolution = StrictChoiceField(
        choices=[("full", "full"), ("work", "work")],
        default="full",
        help_text="full: the image's size, values 0/255 (as exported); "
        "work: the stored 1-bit mask at the working resolution",
    )


class GroundTruthFilter(serializers.Serializer):
    dataset = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)
    stage = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)
    source = StrictChoiceField(choices=GroundTruth.Source.choices, required=False)


class GroundTruthViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Accepted masks with their provenance: stage, source, method, readers, agreement."""

    serializer_class = GroundTruthSerializer

    def get_queryset(self) -> QuerySet:
        queryset = (
            GroundTruth.objects.select_related("mask", "stage", "radiograph")
            .prefetch_related("readers", "model_versions")
            .order_by("id")
        )
        if self.action != "list":
            return queryset
        query = GroundTruthFilter(data=self.request.query_params.dict())
        query.is_valid(raise_exception=True)
        wanted = query.validated_data
        if "dataset" in wanted:
            queryset = queryset.filter(radiograph__dataset_id=wanted["dataset"])
        if "stage" in wanted:
            queryset = queryset.filter(stage_id=wanted["stage"])
        if "source" in wanted:
            queryset = queryset.filter(source=wanted["source"])
        return queryset

    @extend_schema(parameters=[GroundTruthFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[MaskQuery], responses={(200, "image/png"): PNG})
    @action(detail=True, methods=["get"])
    def mask(self, request, pk=None):
        """The accepted mask as a PNG."""
        truth = self.get_object()
        query = MaskQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        if query.validated_data["resolution"] == "work":
            data = blob_read(truth.mask.png.name)  # stored as a 1-bit PNG already
        else:
            data = mask_to_png_0_255(full_size_mask(truth.radiograph, truth.mask.png.name))
        response = HttpResponse(data, content_type="image/png")
        response["Content-Disposition"] = f'inline; filename="mask-{truth.radiograph_id}.png"'
        return response
