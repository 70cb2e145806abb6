"""Live inference: upload a CXR, get its infection map, verdict and severity.

For admins and researchers (like the infection-map viewer): the answer names the detector's
model version, which MDs must never learn. An upload's result is private to whoever sent it
(and admins). The web process never runs a network: it queues a job for the CPU worker and
waits briefly; 200 with the result when it finished in time, else 202 with a status URL.
"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.db.models import QuerySet
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.reverse import reverse

from annotation.api.base import MAX_ID, ApiView
from annotation.api.fields import StrictIntegerField, UploadField
from annotation.api.schema import ErrorDetail
from annotation.api.views_data import PNG
from annotation.models import Dataset, Job
from annotation.selectors.inference import (
    IMAGE_NAMES,
    inference_image_path,
    inference_result,
    inference_visible_to,
    inference_wait,
)
from annotation.services.detector import DetectorError
from annotation.services.inference import InferenceInputError, inference_request

MAX_WAIT_S = 20
URLS = {
    "infection_map_url": "map",
    "gradcam_url": "gradcam",
    "xray_url": "xray",
    "probability_url": "probability",
}


class InferenceIn(serializers.Serializer):
    image = UploadField(help_text="the chest X-ray: PNG, JPEG or DICOM")
    dataset = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text="whose deployed detector runs; absent: the newest deployed detector",
    )
    wait = StrictIntegerField(
        required=False,
        default=10,
        min_value=0,
        max_value=MAX_WAIT_S,
        help_text="seconds to wait for the result before answering 202",
    )


class InferenceOut(serializers.Serializer):
    job = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Job.State.choices)
    done = serializers.BooleanField()
    error = serializers.CharField(help_text="why the analysis failed, if it did")
    status_url = serializers.CharField()
    source = serializers.CharField(allow_null=True, help_text="upload, or radiograph (a case)")
    radiograph = serializers.IntegerField(allow_null=True)
    filename = serializers.CharField()
    model_version = serializers.IntegerField(allow_null=True, help_text="the detector")
    classifier = serializers.IntegerField(allow_null=True, help_text="for Grad-CAM, if any")
    verdict = serializers.CharField(allow_null=True)
    covid = serializers.BooleanField(allow_null=True, help_text="any pixel ≥ 0.5")
    max_prob = serializers.FloatField(allow_null=True)
    severity = serializers.FloatField(allow_null=True, help_text="infected share, 0 to 1")
    severity_basis = serializers.CharField(allow_null=True)
    classifier_prob = serializers.FloatField(allow_null=True)
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    ms = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    infection_map_url = serializers.CharField(allow_null=True)
    gradcam_url = serializers.CharField(allow_null=True)
    xray_url = serializers.CharField(allow_null=True)
    probability_url = serializers.CharField(allow_null=True)


def inference_data(job: Job, request, result: dict | None = None) -> dict:
    result = result or inference_result(job=job)
    images = result.get("images", [])

    def url(name: str) -> str | None:
        if name not in images:
            return None
        return reverse("api:inference-image", kwargs={"pk": job.pk, "name": name}, request=request)

    # Fields of a finished analysis are null until then.
    data = {name: result.get(name) for name in InferenceOut().fields}
    data["status_url"] = reverse("api:inference-detail", kwargs={"pk": job.pk}, request=request)
    data.update({field: url(name) for field, name in URLS.items()})
    return data


class InferenceViewSet(
    ApiView, mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Infection maps of uploaded CXRs by the deployed detector."""

    serializer_class = InferenceOut
    parser_classes = [MultiPartParser]

    def get_queryset(self) -> QuerySet:
        return Job.objects.filter(kind=Job.Kind.INFER)

    def get_object(self) -> Job:
        job = super().get_object()
        if not inference_visible_to(job=job, user=self.request.user):
            raise NotFound("no such result")  # someone else's upload looks like none
        return job

    @extend_schema(
        request={"multipart/form-data": InferenceIn},
        responses={
            200: InferenceOut,
            202: InferenceOut,
            400: OpenApiResponse(
                response=OpenApiTypes.OBJECT,
                description="invalid input (field → messages), or a file that cannot be "
                "analysed (detail: why)",
            ),
            409: OpenApiResponse(response=ErrorDetail, description="no detector is deployed"),
        },
    )
    def create(self, request, *args, **kwargs):
        given = InferenceIn(data=request.data)
        given.is_valid(raise_exception=True)
        options = given.validated_data
        dataset = None
        if "dataset" in options:
            dataset = Dataset.objects.filter(pk=options["dataset"]).first()
            if dataset is None:
                raise NotFound(f"dataset {options['dataset']} does not exist")
        upload = options["image"]
        try:
            job = inference_request(
                upload_bytes=upload.read(),
                filename=upload.name or "",
                user=request.user,
                dataset=dataset,
            )
        except InferenceInputError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except DetectorError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        result = inference_wait(job=job, timeout_s=options["wait"])
        data = inference_data(job, request, result)
        if result["done"]:
            return Response(data)
        return Response(
            data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["status_url"]}
        )

    @extend_schema(responses={200: InferenceOut})
    def retrieve(self, request, *args, **kwargs):
        """The analysis as it stands: poll until `done`."""
        return Response(inference_data(self.get_object(), request))

    @extend_schema(
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, enum=IMAGE_NAMES)
        ],
        responses={
            (200, "image/png"): PNG,
            409: OpenApiResponse(response=ErrorDetail, description="the analysis is not done"),
        },
    )
    @action(detail=True, methods=["get"], url_path=r"images/(?P<name>xray|map|gradcam|probability)")
    def image(self, request, pk=None, name: str = ""):
        """map: the infection map over the CXR; gradcam: the classifier's Grad-CAM; xray: the
        CXR as analysed; probability: the detector's pixel probabilities (8-bit)."""
        job = self.get_object()
        if job.state != Job.State.SUCCEEDED:
            return Response(
                {"detail": f"the analysis is not finished: its job is {job.state}"},
                status=status.HTTP_409_CONFLICT,
            )
        path = inference_image_path(job=job, name=name)
        if path is None or not default_storage.exists(path):
            raise NotFound(f"this analysis has no {name} image")
        response = FileResponse(default_storage.open(path, "rb"), content_type="image/png")
        response["Cache-Control"] = "private, max-age=3600"
        return response
