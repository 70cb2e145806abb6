"""Exports: create one (a job builds it), follow its state, download its zip."""

from __future__ import annotations

from pathlib import PurePosixPath

from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from annotation.api.base import MAX_ID, ApiView
from annotation.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
)
from annotation.api.schema import ErrorDetail
from annotation.models import Dataset, Export, Job
from annotation.services.audit import client_ip
from annotation.services.exports import (
    FORMATS,
    MAX_FOLDS,
    SPLITS,
    ExportError,
    export_download,
    export_request,
)


class ExportSerializer(serializers.ModelSerializer):
    created_by = serializers.SerializerMethodField()
    state = serializers.ChoiceField(source="job.state", choices=Job.State.choices, read_only=True)
    progress = serializers.FloatField(source="job.progress", read_only=True)
    cases_done = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Export
        fields = [
            "id",
            "dataset",
            "job",
            "created_by",
            "created_at",
            "params",
            "state",
            "progress",
            "cases_done",
            "error",
            "n_cases",
            "size",
            "sha256",
            "download_url",
        ]

    def get_created_by(self, obj: Export) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None

    def get_cases_done(self, obj: Export) -> int | None:
        return obj.job.progress_detail.get("cases_done")

    def get_error(self, obj: Export) -> str:
        # The job keeps the traceback for admins; its last line says what went wrong.
        lines = obj.job.error.strip().splitlines()
        return lines[-1] if lines else ""

    def get_download_url(self, obj: Export) -> str | None:
        if not obj.file:
            return None
        return reverse("api:export-download", args=[obj.pk], request=self.context.get("request"))


class ExportCreateSerializer(serializers.Serializer):
    dataset = StrictIntegerField(min_value=1, max_value=MAX_ID)
    stages = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=32767),
        required=False,
        allow_null=True,
        default=None,
        help_text="stage numbers; null or absent: every stage",
    )
    include_imported = StrictBooleanField(
        default=True, help_text="include masks imported as final (no stage)"
    )
    include_controls = StrictBooleanField(
        default=False, help_text="include cases not labelled COVID-19, with empty masks"
    )
    formats = serializers.ListField(
        child=StrictChoiceField(choices=FORMATS), min_length=1, default=list(FORMATS)
    )
    split = StrictChoiceField(
        choices=SPLITS,
        default="none",
        help_text="none: Images/ + Ground-truths/; stored: Train Set/ + Test Set/; "
        "kfold: split files, stratified by label and grouped by patient",
    )
    folds = StrictIntegerField(min_value=2, max_value=MAX_FOLDS, default=5)
    seed = StrictIntegerField(min_value=0, max_value=2**31 - 1, default=0)
    licence = StrictCharField(max_length=500, allow_blank=True, default="")
    citation = StrictCharField(max_length=2000, allow_blank=True, default="")


class ExportViewSet(
    ApiView,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Ground-truth exports. Immutable: there is no update or delete."""

    serializer_class = ExportSerializer
    parser_classes = [JSONParser]

    def get_queryset(self) -> QuerySet:
        return Export.objects.select_related("job", "created_by").order_by("-created_at", "-id")

    @extend_schema(
        request=ExportCreateSerializer,
        responses={
            201: ExportSerializer,
            409: OpenApiResponse(
                response=ErrorDetail, description="the data do not allow this export"
            ),
        },
    )
    def create(self, request, *args, **kwargs):
        given = ExportCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        options = dict(given.validated_data)
        dataset_id = options.pop("dataset")
        dataset = Dataset.objects.filter(pk=dataset_id).first()
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        try:
            export = export_request(
                dataset=dataset,
                created_by=request.user,
                client_ip=client_ip(request),
                **options,
            )
        except ExportError as exc:
            # Well-formed, but the data do not allow it (no such stage, nothing accepted …).
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        out = ExportSerializer(export, context=self.get_serializer_context())
        return Response(out.data, status=status.HTTP_201_CREATED)

    @extend_schema(
        responses={
            (200, "application/zip"): OpenApiResponse(
                response=OpenApiTypes.BINARY, description="the export's zip"
            ),
            409: OpenApiResponse(response=ErrorDetail, description="the export is not ready"),
        }
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The zip, streamed; only once the export's job has succeeded."""
        export = self.get_object()
        try:
            handle = export_download(export=export, by=request.user, client_ip=client_ip(request))
        except ExportError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return FileResponse(
            handle,
            as_attachment=True,
            filename=PurePosixPath(export.file.name).name,
            content_type="application/zip",
        )
