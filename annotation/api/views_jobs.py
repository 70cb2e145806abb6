"""Stages and jobs, read-only for now.

Launch, cancel and retry come with stage orchestration: add them here as
`@action(detail=True, methods=["post"], permission_classes=[IsAdmin])` on these viewsets, each
calling one service (stage_launch, job_cancel, job_retry), so the URLs stay as they are.
"""

from __future__ import annotations

from django.db.models import Count, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets

from annotation.api.base import MAX_ID, ApiView
from annotation.api.fields import (
    StrictChoiceField,
    StrictIntegerField,
)
from annotation.api.serializers import JobSerializer, StageSerializer
from annotation.models import Job, Stage


class StageFilter(serializers.Serializer):
    dataset = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)


class StageViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Stages of the annotation loop, with how many accepted masks each produced."""

    serializer_class = StageSerializer

    def get_queryset(self) -> QuerySet:
        queryset = Stage.objects.annotate(n_ground_truths=Count("ground_truths")).order_by("id")
        if self.action == "list":
            query = StageFilter(data=self.request.query_params.dict())
            query.is_valid(raise_exception=True)
            if "dataset" in query.validated_data:
                queryset = queryset.filter(dataset_id=query.validated_data["dataset"])
        return queryset

    @extend_schema(parameters=[StageFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class JobFilter(serializers.Serializer):
    kind = StrictChoiceField(choices=Job.Kind.choices, required=False)
    state = StrictChoiceField(choices=Job.State.choices, required=False)
    stage = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)


class JobViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Units of worker work: training, prediction, import, export."""

    serializer_class = JobSerializer

    def get_queryset(self) -> QuerySet:
        queryset = Job.objects.order_by("-created_at", "-id")
        if self.action == "list":
            query = JobFilter(data=self.request.query_params.dict())
            query.is_valid(raise_exception=True)
            wanted = query.validated_data
            if "kind" in wanted:
                queryset = queryset.filter(kind=wanted["kind"])
            if "state" in wanted:
                queryset = queryset.filter(state=wanted["state"])
            if "stage" in wanted:
                queryset = queryset.filter(stage_id=wanted["stage"])
        return queryset

    @extend_schema(parameters=[JobFilter])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)
