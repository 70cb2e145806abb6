"""Stages and jobs: everyone with data access reads them; admins create, launch, cancel and
retry, each action one service call (annotation.services.stages, annotation.services.jobs).

409: the stage or job is not in a state that allows the action (the message says why).
"""

from __future__ import annotations

from django.db.models import Count, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
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
from annotation.api.schema import ErrorDetail
from annotation.api.serializers import JobSerializer, StageSerializer
from annotation.models import Dataset, Job, Stage
from annotation.presets import PRESETS
from annotation.services.audit import client_ip
from annotation.services.interactive import InteractiveError, interactive_train_launch
from annotation.services.jobs import JobStateError, job_cancel, job_retry
from annotation.services.stages import StageError, stage_cancel, stage_create, stage_launch
from mlworker.networks import ARCHS, ENCODERS

CONFLICT = OpenApiResponse(response=ErrorDetail, description="not in a state that allows this")


def _choices(values) -> list[tuple[str, str]]:
    return [(v, v) for v in values]


class StageFilter(serializers.Serializer):
    dataset = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)


class NetworkIn(serializers.Serializer):
    arch = StrictChoiceField(choices=_choices(ARCHS))
    encoder = StrictChoiceField(choices=_choices(ENCODERS))
    seed = StrictIntegerField(required=False, min_value=0, max_value=2**31 - 1)


class StageConfigIn(serializers.Serializer):
    """Settings over the preset's (or fast-cpu's) defaults; see annotation/presets.py."""

    mode = StrictChoiceField(choices=Stage.Mode.choices, required=False)
    networks = serializers.ListField(child=NetworkIn(), required=False, min_length=1)
    frozen = StrictBooleanField(required=False)
    augment = StrictBooleanField(required=False)
    epochs = StrictIntegerField(required=False, min_value=1, max_value=1000)
    batch_size = StrictIntegerField(required=False, min_value=1, max_value=512)
    image_size = StrictIntegerField(
        required=False, min_value=32, max_value=2048, help_text="a multiple of 32"
    )
    folds = StrictIntegerField(required=False, min_value=1, max_value=20)
    readers_per_case = StrictIntegerField(required=False, min_value=1, max_value=10)
    learning_rate = serializers.FloatField(required=False, min_value=1e-7, max_value=0.5)
    queue_order = StrictChoiceField(
        choices=Stage.QueueOrder.choices,
        required=False,
        help_text="random (default), informative (most disagreeing candidates first) or dataset",
    )
    auto_accept = StrictBooleanField(
        required=False, help_text="accept cases whose candidates all agree without a reader"
    )
    agreement_threshold = serializers.FloatField(
        required=False, min_value=0.5, max_value=1.0, help_text="pairwise Dice to agree (0.95)"
    )
    audit_share = serializers.FloatField(
        required=False,
        min_value=0.0,
        max_value=1.0,
        help_text="share of agreeing cases still sent to readers (0.05)",
    )
    staple = StrictBooleanField(
        required=False, help_text="add the STAPLE consensus of the networks' masks as a candidate"
    )
    ensemble = StrictBooleanField(
        required=False,
        help_text="add the networks' ensemble (mean probability ≥ 0.5) as a candidate",
    )
    normalise_outlines = StrictBooleanField(
        required=False,
        help_text="redraw every candidate's outline in one style (default true), so readers "
        "cannot tell manual from network masks by their outlines",
    )


class StageCreateIn(serializers.Serializer):
    dataset = StrictIntegerField(min_value=1, max_value=MAX_ID)
    preset = StrictChoiceField(choices=_choices(PRESETS), required=False, allow_null=True)
    config = StageConfigIn(required=False)
    name = StrictCharField(max_length=200, allow_blank=True, default="")


class InteractiveTrainIn(serializers.Serializer):
    epochs = StrictIntegerField(required=False, min_value=1, max_value=1000)
    batch_size = StrictIntegerField(required=False, min_value=2, max_value=256)
    image_size = StrictIntegerField(required=False, min_value=32, max_value=1024)
    lr = serializers.FloatField(required=False, min_value=1e-6, max_value=0.5)
    widths = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=512),
        required=False,
        min_length=2,
        max_length=7,
        help_text="U-Net widths, one per level (default 8, 16, 32, 64, 96)",
    )
    max_clicks = StrictIntegerField(required=False, min_value=1, max_value=20)
    seed = StrictIntegerField(required=False, min_value=0, max_value=2**31 - 1)


class StageViewSet(ApiView, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Stages of the annotation loop, with how many accepted masks each produced."""

    serializer_class = StageSerializer
    parser_classes = [JSONParser]

    def get_permissions(self):
        if self.action == "create":
            return [IsAdmin()]
        return super().get_permissions()

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

    def _answer(self, stage: Stage, code: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=stage.pk)
        return Response(StageSerializer(fresh, context=self.get_serializer_context()).data, code)

    @extend_schema(request=StageCreateIn, responses={201: StageSerializer, 409: CONFLICT})
    def create(self, request, *args, **kwargs):
        """A draft stage (admins) from a preset, settings, or a preset with overrides."""
        given = StageCreateIn(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        dataset = Dataset.objects.filter(pk=data["dataset"]).first()
        if dataset is None:
            raise NotFound(f"dataset {data['dataset']} does not exist")
        config = dict(data.get("config") or {})
        if "networks" in config:
            config["networks"] = [dict(n) for n in config["networks"]]
        try:
            stage = stage_create(
                dataset=dataset,
                preset=data.get("preset"),
                config=config,
                created_by=request.user,
                name=data["name"],
                client_ip=client_ip(request),
            )
        except StageError as exc:
            # Well formed, but the settings conflict, or the dataset has a stage open.
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return self._answer(stage, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: StageSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], permission_classes=[IsAdmin])
    def launch(self, request, pk=None):
        """Start training a draft stage: one job per network (and fold)."""
        stage = self.get_object()
        try:
            stage_launch(stage=stage, by=request.user, client_ip=client_ip(request))
        except StageError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return self._answer(stage)

    @extend_schema(request=InteractiveTrainIn, responses={201: JobSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], permission_classes=[IsAdmin])
    def interactive(self, request, pk=None):
        """Train the click-to-refine network on the dataset's accepted masks up to this stage;
        its model becomes the dataset's current one when the job succeeds."""
        stage = self.get_object()
        given = InteractiveTrainIn(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            job = interactive_train_launch(
                stage=stage,
                by=request.user,
                config=dict(given.validated_data),
                client_ip=client_ip(request),
            )
        except InteractiveError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        context = self.get_serializer_context()
        return Response(JobSerializer(job, context=context).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: StageSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], permission_classes=[IsAdmin])
    def cancel(self, request, pk=None):
        """Stop a stage that has not reached review; its jobs are cancelled."""
        stage = self.get_object()
        try:
            stage_cancel(stage=stage, by=request.user, client_ip=client_ip(request))
        except StageError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return self._answer(stage)


class JobFilter(serializers.Serializer):
    kind = StrictChoiceField(choices=Job.Kind.choices, required=False)
    state = StrictChoiceField(choices=Job.State.choices, required=False)
    stage = StrictIntegerField(required=False, min_value=1, max_value=MAX_ID)


class JobViewSet(ApiView, viewsets.ReadOnlyModelViewSet):
    """Units of worker work: training, prediction, import, export."""

    serializer_class = JobSerializer
    parser_classes = [JSONParser]

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

    def _act(self, service) -> Response:
        job = self.get_object()
        try:
            job = service(job=job, by=self.request.user, client_ip=client_ip(self.request))
        except JobStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(JobSerializer(job, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses={200: JobSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], permission_classes=[IsAdmin])
    def cancel(self, request, pk=None):
        """Queued jobs stop at once, running ones at their next progress report."""
        return self._act(job_cancel)

    @extend_schema(request=None, responses={200: JobSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"], permission_classes=[IsAdmin])
    def retry(self, request, pk=None):
        """Queue a failed or cancelled job again; training resumes from its checkpoint."""
        return self._act(job_retry)
